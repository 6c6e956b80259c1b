"""What both faces (API and UI), and the Gallery's seeding, do with a photo: decode and reduce it once at the ingress, analyse it
once on the Vision deployment, and feed that one embedding to the Gallery deployment.

Works on deployment handles (anything with `.method.remote(...)`), so it holds no model.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from shared.backends import call
from shared.config import Limits
from shared.images import Embedder, decode_image, fetch_image_bytes, thumbnail_jpeg, to_model_input
from shared.schemas import GalleryItem, PhotoMatch, PredictResponse, gallery_image_path


def gallery_label(given: str | None, given_source: str, analysis: Any) -> tuple[str | None, str]:
    """The label a gallery photo gets: the given one; else the predicted breed for a dog; else none."""
    given = (given or "").strip() or None
    if given:
        return given, given_source
    return (analysis.top_breeds(1)[0][0], "predicted") if analysis.is_dog else (None, "none")


@dataclass(frozen=True)
class GalleryEntry:
    embedding: Any
    thumbnail: bytes
    embedder: str
    label: str | None
    label_source: str

    def fields(self) -> tuple:
        """In the order Gallery.add takes them (before `source`)."""
        return self.embedding, self.thumbnail, self.embedder, self.label, self.label_source


@dataclass(frozen=True)
class PreparedPhoto:
    pixels: Any  # uint8 model input
    thumbnail: bytes | None  # JPEG for the gallery, made only for photos that go there


class PhotoService:
    def __init__(self, vision: Any, gallery: Any | None, limits: Limits) -> None:
        """`gallery` may be None for a caller that only makes gallery entries (the Gallery itself)."""
        self.vision = vision
        self.gallery = gallery
        self.limits = limits
        self._embedder: Embedder | None = None

    async def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = await call(self.vision.embedder)
        return self._embedder

    async def prepare(self, data: bytes, thumbnail: bool = False) -> PreparedPhoto:
        """Decode, check and reduce (and make the gallery's thumbnail if asked: a third of the work),
        in a worker thread: Pillow work stays off the event loop."""
        spec = (await self.embedder()).input_spec

        def work() -> PreparedPhoto:
            image = decode_image(data, self.limits)
            return PreparedPhoto(to_model_input(image, spec), thumbnail_jpeg(image) if thumbnail else None)

        return await asyncio.to_thread(work)

    async def fetch(self, url: str) -> bytes:
        return await fetch_image_bytes(url, self.limits)

    async def predict(self, data: bytes, k: int = 4, n: int | None = None) -> PredictResponse:
        photo = await self.prepare(data)
        async with asyncio.timeout(self.limits.photo_timeout_s):
            analysis = await call(self.vision.analyse, photo.pixels)
            breeds = [breed for breed, _ in analysis.top_breeds(k)]
            matches = await call(self.gallery.search, analysis.embedding, breeds, n)
        return PredictResponse(
            probabilities=dict(analysis.top_breeds(len(analysis.breed_probabilities))),
            top_matches=[
                PhotoMatch(id=m.id, label=m.label, path=gallery_image_path(m.id), similarity=m.similarity)
                for m in matches
            ],
            dog_score=analysis.dog_score,
            is_dog=analysis.is_dog,
            best_guess=analysis.best_guess,
            model=analysis.model,
        )

    async def gallery_entry(self, data: bytes, label: str | None, label_source: str = "user") -> GalleryEntry:
        """Everything the gallery stores of a photo. Without a label it gets the predicted breed
        (marked "predicted") when it is a dog, and none otherwise."""
        photo = await self.prepare(data, thumbnail=True)
        async with asyncio.timeout(self.limits.gallery_add_timeout_s):
            analysis = await call(self.vision.analyse, photo.pixels)
        label, label_source = gallery_label(label, label_source, analysis)
        return GalleryEntry(analysis.embedding, photo.thumbnail, analysis.embedder, label, label_source)

    async def add(self, data: bytes, label: str | None, source: str) -> GalleryItem:
        entry = await self.gallery_entry(data, label)
        async with asyncio.timeout(self.limits.gallery_add_timeout_s):
            # Not retried: a Gallery replica that died after committing would store the photo twice.
            stored = await call(self.gallery.add, *entry.fields(), source, retry=False)
        return GalleryItem(
            id=stored.id,
            label=stored.label,
            label_source=stored.label_source,
            source=stored.source,
            added_at=stored.added_at.isoformat(),
            path=gallery_image_path(stored.id),
        )
