"""Gallery deployment: the photo store plus an in-memory index per replica, kept in step with the store."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve.handle import DeploymentHandle
from sqlalchemy.exc import InterfaceError, OperationalError

from backend import telemetry
from backend.data import default_gallery_url
from backend.models.analysis import ImageAnalysis
from backend.models.index import (
    GalleryPage,
    GalleryStore,
    Match,
    StoredPhoto,
    VectorIndex,
    gallery_label,
    labelled_images,
)
from shared.config import Limits
from shared.errors import BackendUnavailable
from shared.images import Embedder, decode_image, thumbnail_jpeg, to_model_input
from shared.schemas import DeploymentStatus

logger = logging.getLogger("ray.serve")

SEED_DIR = Path(__file__).resolve().parent.parent / "gallery_seed"
SEED_WAIT_S = 120.0  # how long a claim to seed the gallery holds the other replicas back


@contextmanager
def store_reachable() -> Iterator[None]:
    """A database that does not answer (down, restarting, unreachable) as the 503 both faces show."""
    try:
        yield
    except (OperationalError, InterfaceError) as exc:
        logger.warning("the gallery's database did not answer: %s", exc.orig or exc)
        raise BackendUnavailable(
            "The gallery's database is not answering; try again shortly.", reason="database_down"
        ) from None


class GallerySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL. None: $RETRIEVER_GALLERY_URL, else SQLite at <data dir>/gallery.db "
        "($RETRIEVER_DATA_DIR or ~/.local/share/retriever).",
    )
    seed: bool = Field(True, description="Add the packaged photos (backend/gallery_seed) to an empty gallery.")
    matches: int = Field(5, ge=1, le=50, description="Similar photos returned when a request does not say.")
    ann_threshold: int = Field(
        50_000, ge=1, description="From this many photos on, search with a FAISS IVF index (approximate)."
    )
    refresh_interval_s: float = Field(
        1.0, ge=0, description="How stale a replica's index may be: adds through other replicas show within it."
    )

    def url(self) -> str:
        return self.database_url or default_gallery_url()


@serve.deployment(name="Gallery", ray_actor_options={"num_cpus": 0.2}, max_ongoing_requests=32)
class Gallery:
    async def __init__(self, vision: DeploymentHandle, settings: GallerySettings) -> None:
        self.settings = settings
        self.vision = vision
        self.embedder: Embedder = await vision.embedder.remote()
        self.store = GalleryStore(settings.url())
        self.index = VectorIndex(self.embedder.dim, settings.ann_threshold)
        # Sync methods run on Serve's thread pool, concurrently: the index changes under this lock.
        self.lock = threading.Lock()
        self.refreshed_at = 0.0
        # The rows read next reflect every change up to here: only later ones need applying.
        self.last_change_id = self.store.last_change_id()
        self.refresh()
        self.seeding = asyncio.get_running_loop().create_task(self._seed()) if settings.seed else None

    def refresh(self) -> None:
        """Take in the rows other replicas (or jobs) added, relabelled or deleted since the last look."""
        with self.lock:
            self.index.extend(self.store.rows_after(self.index.last_id, self.embedder.name))
            changes = self.store.changes_after(self.last_change_id)
            self.index.apply(changes)
            self.last_change_id = changes[-1].id if changes else self.last_change_id
            self.refreshed_at = time.monotonic()
            telemetry.hold(telemetry.gallery_photos(), len(self.index), {"embedder": self.embedder.name})

    def search(
        self, embedding: np.ndarray, breeds: list[str], n: int | None = None, thumbnails: bool = False
    ) -> list[Match]:
        """The `n` photos most like `embedding`, among those labelled with one of `breeds` where there
        are enough; with their thumbnails if asked (what the UI shows), else from memory alone."""
        if time.monotonic() - self.refreshed_at > self.settings.refresh_interval_s:
            try:
                with store_reachable():
                    self.refresh()
            except BackendUnavailable:
                pass  # answer from the photos already in memory; the next search looks again
        with self.lock, telemetry.model_time("Gallery", "search"):
            matches = self.index.search(embedding, n or self.settings.matches, breeds)
        if not thumbnails:
            return matches
        with store_reachable():
            found = self.store.thumbnails([match.id for match in matches])
        return [dataclasses.replace(match, thumbnail=found.get(match.id)) for match in matches]

    def add_analysed(
        self,
        analysis: ImageAnalysis,
        thumbnail: bytes,
        label: str | None,
        label_source: str,
        source: str,
        added_by: str | None = None,
        idempotency: tuple[str, str, str] | None = None,
    ) -> tuple[StoredPhoto, bool]:
        """Store a photo Vision analysed; without a label, a dog gets its predicted breed. With an
        `idempotency` (caller, key, content hash), the same add sent again by the same caller stores
        nothing and answers the first photo. Answers the photo and whether it was stored now."""
        if analysis.embedder != self.embedder.name:
            raise ValueError(
                f"embedding from {analysis.embedder}, but this gallery holds {self.embedder.name} embeddings"
            )
        label, label_source = gallery_label(label, label_source, analysis)
        photo = dict(
            embedding=analysis.embedding,
            thumbnail=thumbnail,
            embedder=analysis.embedder,
            label=label,
            label_source=label_source,
            source=source,
            added_by=added_by,
        )
        with store_reachable():
            if idempotency is None:
                stored, created = self.store.add(**photo), True
            else:
                stored, created = self.store.add_once(*idempotency, **photo)
        self._refresh_after_write()
        return stored, created

    def _refresh_after_write(self) -> None:
        """The writing replica sees its own change at once."""
        try:
            with store_reachable():
                self.refresh()
        except BackendUnavailable:
            pass  # stored all the same (so no 503, which would invite a second write); taken in at the next look

    def page(self, offset: int, limit: int, label: str | None) -> GalleryPage:
        with store_reachable():
            return self.store.page(offset, limit, label)

    def photo(self, photo_id: int) -> StoredPhoto:
        with store_reachable():
            return self.store.get(photo_id)

    def relabel(self, photo_id: int, label: str | None) -> StoredPhoto:
        with store_reachable():
            photo = self.store.relabel(photo_id, label)
        self._refresh_after_write()
        return photo

    def delete(self, photo_id: int) -> None:
        with store_reachable():
            self.store.delete(photo_id)
        self._refresh_after_write()

    def thumbnails(self, photo_ids: list[int]) -> list[bytes | None]:
        with store_reachable():
            found = self.store.thumbnails(photo_ids)
        return [found.get(photo_id) for photo_id in photo_ids]

    def status(self) -> DeploymentStatus:
        try:
            with store_reachable():
                self.store.ping()
        except BackendUnavailable as exc:
            return DeploymentStatus(
                ready=False, model=f"{len(self.index)} photos ({self.embedder.name})", detail=str(exc)
            )
        seeding = self.seeding is not None and not self.seeding.done()
        return DeploymentStatus(
            ready=not seeding,
            model=f"{len(self.index)} photos ({self.embedder.name})",
            detail="adding the packaged photos" if seeding else None,
        )

    async def _seed(self) -> None:
        """Fill an empty gallery with the packaged photos, once across all replicas and restarts.
        Each is analysed by Vision, as an upload is, then added here."""
        marker = f"seeded:{self.embedder.name}"
        if self.store.count(self.embedder.name):
            return
        if not self.store.claim(marker):
            await self._await_seeding(marker)
            return
        try:
            for path, label in labelled_images(SEED_DIR):
                pixels, thumbnail = await asyncio.to_thread(self._seed_photo, path)
                analysis = await self.vision.analyse.remote(pixels)
                source = f"seed:{path.relative_to(SEED_DIR)}"
                await asyncio.to_thread(self.add_analysed, analysis, thumbnail, label, "folder", source)
        except Exception:
            logger.exception("seeding the gallery failed")
            self.store.release(marker)
        else:
            self.store.claim(f"{marker}:done")

    def _seed_photo(self, path: Path) -> tuple[np.ndarray, bytes]:
        """A packaged photo decoded once: the model's input and the gallery's thumbnail (in a thread)."""
        image = decode_image(path.read_bytes(), Limits())
        return to_model_input(image, self.embedder.input_spec), thumbnail_jpeg(image)

    async def _await_seeding(self, marker: str) -> None:
        """Another replica holds the claim to seed: not ready until it is done (a replica that said
        ready with an empty gallery would answer searches with nothing). Only while the claim is fresh:
        an old one is a seeding that ended long ago (its photos since deleted) or a replica that died.
        At most SEED_WAIT_S here too, whatever the clocks of the two replicas' nodes say."""
        deadline = time.monotonic() + SEED_WAIT_S
        while time.monotonic() < deadline:
            try:
                claimed_at = await asyncio.to_thread(self.store.marker_at, marker)
                if claimed_at is None or await asyncio.to_thread(self.store.marker_at, f"{marker}:done"):
                    break
                if (dt.datetime.now(dt.UTC) - claimed_at).total_seconds() > SEED_WAIT_S:
                    break
            except (OperationalError, InterfaceError):
                pass  # the database is down: status() says so meanwhile
            await asyncio.sleep(0.5)
        with suppress(OperationalError, InterfaceError):
            await asyncio.to_thread(self.refresh)
