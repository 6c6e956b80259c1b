"""A small labelled photo folder for training tests: three classes of distinct real photos (no photo is
a crop or mirror of another in its class), so that whichever photo the split keeps for validation, the
model is judged on a photo it never saw, not on a view of one it learned."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.photos import PHOTOS, SEED_PHOTOS

CLASSES = {
    "dog": [SEED_PHOTOS["dog"], SEED_PHOTOS["dog2"]],  # a dog on a porch, another in a field
    "cheetah": [SEED_PHOTOS["cheetah"], PHOTOS["cheetah"], PHOTOS["cheetah2"]],  # running, a face, a cub
    "horse": [SEED_PHOTOS["horse"], PHOTOS["horse"]],  # horses in a meadow, a white horse on a steppe
}


def build_labelled_folder(root: Path) -> Path:
    """<root>/<class>/<n>.<ext>: the photos of CLASSES as they are."""
    for label, photos in CLASSES.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for n, photo in enumerate(photos):
            shutil.copy(photo, root / label / f"{n:02d}{photo.suffix}")
    return root
