"""The real photos tests use (see backend/gallery_seed/README.md for where each comes from). A module of
its own so that code outside pytest (tests/labelled_folder.py, used by bench/) can name them too."""

from pathlib import Path

SEED = Path(__file__).resolve().parent.parent / "backend" / "gallery_seed"
PHOTOS = {
    "dog": SEED / "dog-on-porch.jpg",
    "dog2": SEED / "dog-in-field.jpg",
    "cat": SEED / "cat" / "chelsea.png",
    "eagle": SEED / "eagle" / "eagle.jpg",
    "giraffe": SEED / "giraffe" / "giraffe.jpg",
}
