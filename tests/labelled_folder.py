"""A small labelled photo folder for training tests, made from the real photos in backend/gallery_seed:
each class is one photo seen through random crops and mirror images (seeded, so runs repeat)."""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageOps

from tests.photos import PHOTOS

CLASSES = {
    "porch dog": PHOTOS["dog"],
    "field dog": PHOTOS["dog2"],
    "cat": PHOTOS["cat"],
    "eagle": PHOTOS["eagle"],
    "giraffe": PHOTOS["giraffe"],
}


def build_labelled_folder(root: Path, per_class: int = 10, seed: int = 0) -> Path:
    """<root>/<class>/<n>.jpg: crops keeping 55-100% of each side, every other one mirrored."""
    rng = random.Random(seed)
    for label, source in CLASSES.items():
        image = ImageOps.exif_transpose(Image.open(source)).convert("RGB")
        (root / label).mkdir(parents=True, exist_ok=True)
        for n in range(per_class):
            scale = rng.uniform(0.55, 1.0)
            width, height = int(image.width * scale), int(image.height * scale)
            left, top = rng.randint(0, image.width - width), rng.randint(0, image.height - height)
            crop = image.crop((left, top, left + width, top + height))
            if n % 2:
                crop = ImageOps.mirror(crop)
            crop.save(root / label / f"{n:02d}.jpg", quality=90)
    return root
