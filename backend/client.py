"""The client of the model deployments: the one way both faces (the HTTP API and the UI) reach them.

One method per thing a user asks for. Each checks the input, decodes and reduces a photo once (here, in
the face's process: only the small model input travels), calls the deployments, and answers domain
types or raises domain errors (shared/errors.py), never Serve's or Ray's:
- Serve's ways of saying "not now" (a full queue, a deployment not up, a replica that died) and a call
  past the route's time limit (Limits) become `BackendUnavailable` with a sentence for the user;
- an error a replica raised reaches the caller as itself, not wrapped in Ray's traceback;
- a call a dead replica dropped is sent once more when it is safe to repeat (reading the model or the
  gallery, never an add: a replica that died after committing would store the photo twice). Serve
  routes the retry to a live replica, or holds it until the replacement is up.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

from backend import telemetry
from backend.admission import Admission
from backend.models.analysis import Explanation, ImageAnalysis
from backend.models.index import GalleryPage, Match, StoredPhoto, clean_label
from shared.articles import fetch_page, page_text
from shared.config import Limits
from shared.errors import (
    BackendTimeout,
    BackendUnavailable,
    BlockedArticleUrl,
    BlockedUrl,
    IdempotencyConflict,
    ImageTooLarge,
    InvalidArticle,
    InvalidImage,
    InvalidLabel,
    PhotoNotFound,
    TooManyPhotos,
    UnknownBreed,
    UrlRefused,
)
from shared.images import (
    Embedder,
    InputSpec,
    decode_image,
    fetch_image_bytes,
    heat_overlay,
    thumbnail_jpeg,
    to_model_input,
)
from shared.schemas import DeploymentStatus, Readiness, SummarizeOptions, SummaryResult, validate_article

logger = logging.getLogger("ray.serve")

# What each model deployment is called in messages to users.
READABLE_NAMES = {"Summarizer": "The summarizer", "Vision": "The vision model", "Gallery": "The gallery"}
# Serve's errors that mean "not now" rather than "your input is wrong".
SERVE_UNAVAILABLE = (BackPressureError, DeploymentUnavailableError, RayActorError)
# Errors a replica raises for the user to read: passed on as they are.
DOMAIN_ERRORS = (
    InvalidArticle,
    InvalidImage,
    InvalidLabel,
    IdempotencyConflict,
    PhotoNotFound,
    UnknownBreed,
    BackendUnavailable,
)
READINESS_TIMEOUT_S = 5.0


def readable(deployment: str) -> str:
    return READABLE_NAMES.get(deployment, f"The {deployment} deployment")


def model_admission(deadline_s: float | None, always_admit: int = 8) -> Admission:
    """The account of photos (on Vision) and summaries (on the Summarizer) let in by deadline: one for
    both, as they share the cores. The client keeps one, and so does the proxy's door (backend/api/deadline.py)."""
    return Admission(deadline_s, {name: readable(name) for name in ("Vision", "Summarizer")}, always_admit)


def unavailable(exc: BaseException, deployment: str) -> BackendUnavailable:
    """One of SERVE_UNAVAILABLE as a message for the user (and counted)."""
    name = readable(deployment)
    if isinstance(exc, BackPressureError):
        refusal = BackendUnavailable(
            f"{name} is busy (its queue is full); try again shortly.", exc.retry_after_s or 1, "queue_full"
        )
    elif isinstance(exc, DeploymentUnavailableError):
        refusal = BackendUnavailable(f"{name} is not deployed right now; try again later.", reason="not_deployed")
    else:
        refusal = BackendUnavailable(
            f"{name} stopped during the request and is restarting; try again shortly.", reason="replica_died"
        )
    return counted(refusal, deployment)


def counted(refusal: BackendUnavailable, deployment: str) -> BackendUnavailable:
    """A "try again" on its way to a user, counted in the rejections metric."""
    telemetry.rejections().inc(tags={"deployment": deployment, "reason": refusal.reason})
    return refusal


def unwrapped(exc: BaseException, deployment: str) -> BaseException:
    """A domain error a replica raised, rather than Ray's wrapper of it (whose str() is a traceback);
    a refusal (the gallery's database down) is counted."""
    cause = getattr(exc, "cause", None)
    error = cause if isinstance(cause, DOMAIN_ERRORS) else exc
    return counted(error, deployment) if isinstance(error, BackendUnavailable) else error


async def call(method: Any, *args: Any, retry: bool = True) -> Any:
    """`await method.remote(*args)` on a deployment handle's method (`handle.analyse`); sent once more
    if the replica died under it and `retry` (the call is safe to repeat)."""
    deployment = getattr(method, "deployment_name", "model")
    for attempt in (1, 2):
        try:
            return await method.remote(*args)
        except RayActorError as exc:
            if not retry or attempt == 2:
                raise unavailable(exc, deployment) from exc
            logger.warning("a %s replica died during a call; sending it once more", deployment)
        except SERVE_UNAVAILABLE as exc:
            raise unavailable(exc, deployment) from exc
        except DOMAIN_ERRORS as exc:
            raise unwrapped(exc, deployment) from None


@asynccontextmanager
async def time_limit(seconds: float, deployment: str) -> AsyncIterator[None]:
    """The route's time limit on calls to `deployment`; past it, `BackendTimeout`."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        message = f"{readable(deployment)} did not answer within {seconds:.0f} s; try again."
        raise counted(BackendTimeout(message), deployment) from None


@dataclass(frozen=True)
class PhotoAnswer:
    """What a Find answers: the photo's analysis and the gallery's closest photos, and where asked,
    where the model looked (with the model input under the heat map, uint8 RGB)."""

    analysis: ImageAnalysis
    matches: list[Match]
    explanation: Explanation | None = None
    overlay: Any = None  # np.ndarray, or None without a heat map


@dataclass(frozen=True)
class PreparedPhoto:
    pixels: Any  # uint8 model input
    thumbnail: bytes | None  # JPEG for the gallery, made only for photos that go there


class ModelClient:
    """Summaries and photos over handles to the Summarizer, Vision and Gallery deployments (anything
    with `.method.remote(...)`)."""

    def __init__(self, summarizer: Any, vision: Any, gallery: Any, limits: Limits) -> None:
        self.summarizer = summarizer
        self.vision = vision
        self.gallery = gallery
        self.limits = limits
        self._embedder: Embedder | None = None
        self._admission = model_admission(limits.admit_within_s)

    # ----------------------------------------------------------------------------- summaries

    async def summarize(self, text: str, options: SummarizeOptions) -> SummaryResult:
        validate_article(text, self.limits)
        with self._admitted("Summarizer"):
            async with time_limit(self.limits.summary_timeout_s, "Summarizer"):
                return await call(self.summarizer.summarize, text, options)

    async def stream_summary(self, text: str, options: SummarizeOptions) -> AsyncIterator[str]:
        """The summary in pieces as the model writes them. Not retried: a stream that broke off has
        been partly shown."""
        validate_article(text, self.limits)
        with self._admitted("Summarizer"):
            deadline = asyncio.get_running_loop().time() + self.limits.summary_timeout_s
            stream = self.summarizer.options(stream=True).stream.remote(text, options)
            while True:
                try:
                    # The time limit covers the whole summary, but only the waits for the next piece: the
                    # caller's work between pieces is never interrupted.
                    async with asyncio.timeout_at(deadline):
                        piece = await anext(stream)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    message = f"The summarizer did not answer within {self.limits.summary_timeout_s:.0f} s; try again."
                    raise counted(BackendTimeout(message), "Summarizer") from None
                except SERVE_UNAVAILABLE as exc:
                    raise unavailable(exc, "Summarizer") from exc
                except DOMAIN_ERRORS as exc:
                    raise unwrapped(exc, "Summarizer") from None
                yield piece

    async def fetch_article(self, url: str) -> str:
        """An article URL's text: the page fetched as safely as an image URL, reduced to its main text.
        A URL that is refused or fails is an InvalidArticle saying why (refusals counted by reason)."""
        try:
            body, content_type = await fetch_page(url, self.limits)
        except UrlRefused as exc:
            telemetry.urls_refused().inc(tags={"reason": exc.reason})
            refused = BlockedArticleUrl if isinstance(exc, BlockedUrl) else InvalidArticle
            raise refused(str(exc)) from None
        return await asyncio.to_thread(page_text, body, content_type)

    async def summarizer_model(self) -> str:
        return (await call(self.summarizer.status)).model

    # ----------------------------------------------------------------------------- photos

    async def fetch(self, url: str) -> bytes:
        """An image URL's bytes, through the SSRF-safe fetcher (refusals counted by reason)."""
        try:
            return await fetch_image_bytes(url, self.limits)
        except InvalidImage as exc:
            if isinstance(exc, UrlRefused):
                reason = exc.reason
            else:  # it answered, but not with a usable image
                reason = "too_large" if isinstance(exc, ImageTooLarge) else "not_an_image"
            telemetry.urls_refused().inc(tags={"reason": reason})
            raise

    async def find(
        self,
        data: bytes,
        k: int = 4,
        n: int | None = None,
        thumbnails: bool = False,
        explain: bool = False,
        explain_breed: str | None = None,
    ) -> PhotoAnswer:
        """Breeds, dog score and the most similar gallery photos (searched among the top `k` breeds),
        with their thumbnails if asked, and if `explain`, where the model looked for `explain_breed`
        (default: the top breed): everything a Find shows, in one answer."""
        with self._admitted("Vision"):  # before decoding: a refusal costs next to nothing
            photo = await self._prepare(data)
            explanation = overlay = None
            async with time_limit(self.limits.photo_timeout_s, "Vision"):
                if explain or explain_breed:
                    analysis, explanation = await call(self.vision.explain, photo.pixels, explain_breed or None)
                else:
                    analysis = await call(self.vision.analyse, photo.pixels)
            if explanation is not None and explanation.heat is not None:
                overlay = await asyncio.to_thread(heat_overlay, photo.pixels, explanation.heat)
            breeds = [breed for breed, _ in analysis.top_breeds(k)]
            async with time_limit(self.limits.photo_timeout_s, "Gallery"):
                matches = await call(self.gallery.search, analysis.embedding, breeds, n, thumbnails)
        return PhotoAnswer(analysis, matches, explanation, overlay)

    def check_batch(self, sizes: list[int]) -> None:
        """TooManyPhotos if photos of these sizes (bytes) are more, or larger together, than a batch may be."""
        if len(sizes) > self.limits.max_batch_photos:
            raise TooManyPhotos(f"At most {self.limits.max_batch_photos} photos at once; this was {len(sizes)}.")
        if sum(sizes) > self.limits.max_batch_bytes:
            raise TooManyPhotos(
                f"The photos come to {sum(sizes) / 2**20:.1f} MiB together, over the limit of "
                f"{self.limits.max_batch_bytes / 2**20:.0f} MiB."
            )

    async def analyse_photos(self, photos: list[bytes]) -> list[ImageAnalysis | InvalidImage | BackendUnavailable]:
        """Each photo's analysis, in order, or what kept that photo from one (not an image, over a limit,
        the model busy): a bad photo fails alone. The photos go to Vision together, so that its batcher
        puts them in few forward passes."""
        self.check_batch([len(data) for data in photos])

        async def analyse(data: bytes) -> ImageAnalysis | InvalidImage | BackendUnavailable:
            try:
                with self._admitted("Vision"):
                    photo = await self._prepare(data)
                    async with time_limit(self.limits.photo_timeout_s, "Vision"):
                        return await call(self.vision.analyse, photo.pixels)
            except (InvalidImage, BackendUnavailable) as problem:
                return problem

        return list(await asyncio.gather(*(analyse(data) for data in photos)))

    async def add(
        self,
        data: bytes,
        label: str | None,
        source: str,
        added_by: str | None = None,
        idempotency_key: tuple[str, str] | None = None,
    ) -> tuple[StoredPhoto, bool]:
        """Store a photo in the gallery. Without a label it gets the predicted breed (marked
        "predicted") when it is a dog, and none otherwise. With an `idempotency_key` (the caller's
        identity, the key it sent), the same content sent again answers the first photo and stores
        nothing. Answers the photo and whether this call stored it."""
        label = clean_label(label)  # before any model work
        idempotency = None
        if idempotency_key is not None:
            content = hashlib.sha256(data + b"\0label:" + (label or "").encode()).hexdigest()
            idempotency = (*idempotency_key, content)
        with self._admitted("Vision"):
            photo = await self._prepare(data, thumbnail=True)
            async with time_limit(self.limits.gallery_add_timeout_s, "Vision"):
                analysis = await call(self.vision.analyse, photo.pixels)
        async with time_limit(self.limits.gallery_add_timeout_s, "Gallery"):
            # Retried only with an idempotency key: without one, a Gallery replica that died after
            # committing would store the photo twice.
            return await call(
                self.gallery.add_analysed,
                analysis,
                photo.thumbnail,
                label,
                "user",
                source,
                added_by,
                idempotency,
                retry=idempotency is not None,
            )

    async def gallery_page(self, offset: int = 0, limit: int = 50, label: str | None = None) -> GalleryPage:
        """Stored photos, newest first."""
        async with time_limit(self.limits.photo_timeout_s, "Gallery"):
            return await call(self.gallery.page, offset, limit, label)

    async def photo(self, photo_id: int) -> StoredPhoto:
        async with time_limit(self.limits.photo_timeout_s, "Gallery"):
            return await call(self.gallery.photo, photo_id)

    async def relabel(self, photo_id: int, label: str | None) -> StoredPhoto:
        label = clean_label(label)
        async with time_limit(self.limits.gallery_add_timeout_s, "Gallery"):
            return await call(self.gallery.relabel, photo_id, label)  # the same label twice: the same photo

    async def delete(self, photo_id: int) -> None:
        """Remove a photo; PhotoNotFound when there is none (a delete sent twice: the second says so)."""
        async with time_limit(self.limits.gallery_add_timeout_s, "Gallery"):
            # Not retried: a replica that died after deleting would make the retry a 404.
            await call(self.gallery.delete, photo_id, retry=False)

    async def thumbnail(self, photo_id: int) -> bytes:
        """A gallery photo's JPEG, or PhotoNotFound."""
        (thumbnail,) = await self.thumbnails([photo_id])
        if thumbnail is None:
            raise PhotoNotFound(f"No photo {photo_id} in the gallery.")
        return thumbnail

    async def thumbnails(self, photo_ids: list[int]) -> list[bytes | None]:
        """The JPEGs of several photos in one call (None for an id that names no photo)."""
        async with time_limit(self.limits.photo_timeout_s, "Gallery"):
            return await call(self.gallery.thumbnails, photo_ids)

    @contextmanager
    def _admitted(self, deployment: str) -> Iterator[None]:
        """A place among the calls to `deployment` that can be answered within limits.admit_within_s, or
        BackendUnavailable (counted) at once."""
        try:
            ticket = self._admission.admit(deployment)
        except BackendUnavailable as refusal:
            raise counted(refusal, deployment) from None
        answered = True
        try:
            yield
        except BackendUnavailable as exc:
            # A refusal from further in says nothing of how long an answer takes; a timeout does.
            answered = isinstance(exc, BackendTimeout)
            raise
        finally:
            self._admission.release(ticket, answered)

    async def _input_spec(self) -> InputSpec:
        """The serving model's input geometry (asked once: a swap never changes the embedder)."""
        if self._embedder is None:
            async with time_limit(self.limits.photo_timeout_s, "Vision"):
                self._embedder = await call(self.vision.embedder)
        return self._embedder.input_spec

    async def _prepare(self, data: bytes, thumbnail: bool = False) -> PreparedPhoto:
        """Decode, check and reduce (and make the gallery's thumbnail if asked: a third of the work),
        in a worker thread: Pillow work stays off the event loop."""
        spec = await self._input_spec()

        def work() -> PreparedPhoto:
            image = decode_image(data, self.limits)
            return PreparedPhoto(to_model_input(image, spec), thumbnail_jpeg(image) if thumbnail else None)

        return await asyncio.to_thread(work)

    # ----------------------------------------------------------------------------- health

    async def readiness(self) -> Readiness:
        """Whether every model deployment answers, and what each serves."""
        handles = {"Summarizer": self.summarizer, "Vision": self.vision, "Gallery": self.gallery}
        answers = await asyncio.gather(*(self._probe(name, handle) for name, handle in handles.items()))
        statuses = dict(zip(handles, answers, strict=True))
        return Readiness(ready=all(s.ready for s in statuses.values()), deployments=statuses)

    @staticmethod
    async def _probe(name: str, handle: Any) -> DeploymentStatus:
        try:
            async with asyncio.timeout(READINESS_TIMEOUT_S):
                return await handle.status.remote()
        except TimeoutError:
            return DeploymentStatus(ready=False, detail=f"no answer within {READINESS_TIMEOUT_S:.0f} s")
        except Exception as exc:  # a dead or failing replica: report it, never fail the probe itself
            logger.warning("readiness probe of %s failed: %r", name, exc)
            return DeploymentStatus(ready=False, detail=type(exc).__name__)
