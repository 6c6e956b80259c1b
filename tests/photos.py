"""The real photos tests use. A module of its own so that code outside pytest (tests/labelled_folder.py,
used by bench/) can name them too.

PHOTOS are what the tests send: none is a photo of the gallery seed (tests/fixtures/photos/README.md
says what each is cropped from). SEED_PHOTOS are the gallery's own, for tests where identity is the
point (the image server serves them; the seed's labels)."""

from pathlib import Path

SEED = Path(__file__).resolve().parent.parent / "backend" / "gallery_seed"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "photos"
PHOTOS = {
    "dog": FIXTURES / "dog-porch-crop.jpg",
    "dog2": FIXTURES / "dog-field-crop.jpg",
    "dog-bicycle": FIXTURES / "dog-bicycle-crop.jpg",  # the dog in part of the photo
    "dog-person": FIXTURES / "dog-person-crop.jpg",
    "cat": FIXTURES / "cat-face-crop.jpg",
    "eagle": FIXTURES / "eagle-crop.jpg",
    "giraffe": FIXTURES / "giraffe-crop.jpg",
    "horse": FIXTURES / "horse-field-crop.jpg",
    "cheetah": FIXTURES / "cheetah-face.jpg",
    "cheetah2": FIXTURES / "cheetah-cub.jpg",
}
SEED_PHOTOS = {
    "dog": SEED / "dog-on-porch.jpg",
    "dog2": SEED / "dog-in-field.jpg",
    "cat": SEED / "cat" / "chelsea.png",
    "horse": SEED / "horse" / "horses.jpg",
    "cheetah": SEED / "cheetah" / "cheetah.jpg",
}
