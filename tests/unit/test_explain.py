"""Where the model looked (Grad-CAM on EfficientNet-Lite0's last convolutional features), on real photos
with the packaged model: the heat lies on the dog, follows the breed asked about, and is drawn over the
photo. (The exported registry versions against the eager network: tests/unit/test_registry.py; CLIP's
answer without a map: tests/unit/test_vision.py; through the app: tests/api/test_photos_api.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from backend.models.vision import BreedClassifier
from shared.config import Limits
from shared.errors import UnknownBreed
from shared.images import decode_image, heat_at, heat_overlay, to_model_input
from tests.photos import FIXTURES

# Boxes around the dog, drawn by hand on each photo (left, top, right, bottom, in the photo's pixels):
# a dog beside a bicycle, and a dog beside a person in a field (tests/fixtures/photos/README.md).
DOG_BOXES = {
    "dog-bicycle-crop.jpg": (80, 70, 250, 365),
    "dog-person-crop.jpg": (40, 140, 190, 230),
}


@pytest.fixture(scope="module")
def classifier() -> BreedClassifier:
    return BreedClassifier.packaged()


def model_input(classifier: BreedClassifier, name: str) -> tuple[np.ndarray, tuple[float, ...]]:
    """The photo's model input, and the dog's box moved with it (resized, centre-cropped)."""
    image = decode_image((FIXTURES / name).read_bytes(), Limits())
    spec = classifier.input_spec
    scale = spec.resize_short / min(image.size)
    left = (round(image.width * scale) - spec.crop) // 2
    top = (round(image.height * scale) - spec.crop) // 2
    x0, y0, x1, y1 = DOG_BOXES[name]
    box = (x0 * scale - left, y0 * scale - top, x1 * scale - left, y1 * scale - top)
    return to_model_input(image, spec), tuple(float(np.clip(v, 0, spec.crop)) for v in box)


def share_inside(heat: np.ndarray, box: tuple[float, ...], size: int) -> float:
    fine = heat_at(heat, size, size)
    x0, y0, x1, y1 = (round(v) for v in box)
    return float(fine[y0:y1, x0:x1].sum() / fine.sum())


@pytest.mark.parametrize("name", sorted(DOG_BOXES))
def test_most_of_the_heat_lies_on_the_dog(classifier: BreedClassifier, name: str) -> None:
    pixels, box = model_input(classifier, name)
    analysis, explanation = classifier.explain(pixels)
    assert analysis.is_dog and explanation.breed == analysis.top_breeds(1)[0][0]
    assert explanation.heat.shape == (7, 7) and explanation.heat.max() == pytest.approx(1.0)
    area = (box[2] - box[0]) * (box[3] - box[1]) / pixels.shape[0] ** 2
    inside = share_inside(explanation.heat, box, pixels.shape[0])
    assert inside > 0.5 and inside > 1.5 * area, (inside, area)


def test_the_map_follows_the_breed_asked_about(classifier: BreedClassifier) -> None:
    pixels, _ = model_input(classifier, "dog-person-crop.jpg")
    analysis, top = classifier.explain(pixels)
    assert top.breed == "malamute"
    for breed in ("Chihuahua", "dalmatian", "pug"):  # breeds whose evidence is elsewhere, or nowhere
        again, explanation = classifier.explain(pixels, breed)
        assert explanation.breed == breed
        assert explanation.probability == pytest.approx(float(again.breed_probabilities[again.labels.index(breed)]))
        np.testing.assert_array_equal(again.breed_probabilities, analysis.breed_probabilities)  # the same answer
        assert np.abs(explanation.heat - top.heat).max() > 0.3, breed
    with pytest.raises(UnknownBreed, match="poodle-ish"):
        classifier.explain(pixels, "poodle-ish")


def test_the_overlay_is_the_photo_where_cold_and_red_where_hot(classifier: BreedClassifier) -> None:
    pixels, _ = model_input(classifier, "dog-bicycle-crop.jpg")
    _, explanation = classifier.explain(pixels)
    overlay = heat_overlay(pixels, explanation.heat)
    assert overlay.shape == pixels.shape and overlay.dtype == np.uint8
    fine = heat_at(explanation.heat, 224, 224)
    hot, cold = fine > 0.9, fine < 0.05
    assert hot.any() and cold.any()
    shift = overlay.astype(int) - pixels.astype(int)
    assert np.abs(shift[cold]).mean() < np.abs(shift[hot]).mean() / 3  # the photo shows through where cold
    red, _, blue = overlay[hot].astype(int).mean(axis=0)
    assert red > blue + 60  # hot is drawn red
