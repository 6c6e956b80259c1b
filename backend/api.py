"""The HTTP API: the Ray Serve tutorial's routes plus a versioned JSON API.

Routes turn HTTP into schemas, call backend deployments through their handles, and turn the results
(or errors) back into HTTP. No model code runs here.
"""

# No `from __future__ import annotations` here: Serve ships this class to replicas by value, and
# FastAPI must evaluate the route annotations (SummarizeRequest, ...) from the function objects.
import asyncio
import logging
import time
from typing import Any

from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.backends import BackendUnavailable, call
from shared.config import Limits
from shared.images import InvalidImage
from shared.photos import PhotoService
from shared.schemas import (
    DeploymentStatus,
    ErrorResponse,
    GalleryItem,
    InvalidArticle,
    PredictRequest,
    PredictResponse,
    Readiness,
    SummarizeOptions,
    SummarizeRequest,
    SummarizeResponse,
    error_message,
    validate_article,
)

logger = logging.getLogger("ray.serve")

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        400: "The image URL is refused (not http(s), or a non-public address), or the body is not UTF-8.",
        413: "The text or image is larger than the configured limit.",
        422: "Input that cannot be used: empty or non-text text, a file that is not a readable image, "
        "an image URL that cannot be fetched, or a request that does not match the schema.",
        503: "A model deployment is busy (its queue is full), restarting, or did not answer in time; "
        "the Retry-After header says when to try again.",
    }.items()
}

api = FastAPI(
    title="Retriever",
    version="0.1.0",
    description=(
        "Article summaries and dog photos served by Ray Serve. `GET /Summarizer?txt=...` and "
        "`POST /predict/` are the Ray Serve tutorials' routes; `/api/v1/...` is the typed API. "
        "The web UI is at [/ui](/ui)."
    ),
)


@api.exception_handler(RequestValidationError)
async def readable_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """One readable line per problem, so that every error body is {"detail": "<text>"}."""
    problems = []
    for error in exc.errors():
        if error["type"] == "json_invalid":  # loc is ("body", offset)
            reason = error.get("ctx", {}).get("error", "")
            problems.append(f"body: not valid JSON at character {error['loc'][-1]} ({reason})")
            continue
        where = ".".join(str(part) for part in error["loc"][1:]) or error["loc"][0]
        problems.append(f"{where}: {error['msg']}")
    return JSONResponse({"detail": "; ".join(problems)}, status_code=422)


@api.exception_handler(StarletteHTTPException)
async def readable_http_error(request: Request, exc: StarletteHTTPException) -> Response:
    """FastAPI answers a body it cannot decode with "There was an error parsing the body": say why."""
    if isinstance(exc.__cause__, UnicodeDecodeError):
        return JSONResponse({"detail": f"body: not UTF-8 text (byte {exc.__cause__.start} cannot be decoded)"}, status_code=400)
    return await http_exception_handler(request, exc)


def unavailable(exc: BackendUnavailable) -> HTTPException:
    return HTTPException(503, str(exc), headers={"Retry-After": exc.retry_after})


def timed_out(what: str) -> HTTPException:
    return HTTPException(503, f"{what} did not answer in time; try again.", headers={"Retry-After": "5"})


@serve.deployment(name="Api", ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=64)
@serve.ingress(api)
class Api:
    def __init__(
        self,
        summarizer: DeploymentHandle,
        vision: DeploymentHandle,
        gallery: DeploymentHandle,
        limits: Limits,
    ) -> None:
        self.summarizer = summarizer
        self.limits = limits
        self.photos = PhotoService(vision, gallery, limits)
        self.gallery = gallery
        # Every model deployment the readiness probe asks, by the name it reports.
        self.backends = {"Summarizer": summarizer, "Vision": vision, "Gallery": gallery}

    async def _summarize(self, text: str, options: SummarizeOptions) -> SummarizeResponse:
        started = time.perf_counter()
        try:
            validate_article(text, self.limits)
            async with asyncio.timeout(self.limits.summary_timeout_s):
                result = await call(self.summarizer.summarize, text, options)
        except InvalidArticle as exc:
            raise HTTPException(exc.status_code, error_message(exc)) from exc
        except BackendUnavailable as exc:
            raise unavailable(exc) from exc
        except TimeoutError as exc:
            raise timed_out("The summarizer") from exc
        return SummarizeResponse(
            summary=result.summary,
            model=result.model,
            pieces=result.pieces,
            timings={"model_ms": result.model_ms, "total_ms": (time.perf_counter() - started) * 1000},
        )

    @api.get("/", include_in_schema=False)
    async def home(self) -> RedirectResponse:
        return RedirectResponse("/ui/")

    @api.get(
        "/Summarizer",
        response_class=PlainTextResponse,
        responses=ERRORS,
        summary="Summarize (the Ray Serve tutorial's route)",
        description="Returns the summary as the response body. For long articles use POST /api/v1/summarize: "
        "URLs are limited in length.",
    )
    async def tutorial_summarize(self, txt: str = Query(description="The article.")) -> str:
        return (await self._summarize(txt, SummarizeOptions())).summary

    @api.post("/api/v1/summarize", response_model=SummarizeResponse, responses=ERRORS, summary="Summarize an article")
    async def summarize(self, request: SummarizeRequest) -> SummarizeResponse:
        return await self._summarize(request.text, request.options)

    # ----------------------------------------------------------------------- dog photos

    async def _photo_call(self, request: Request, work) -> Any:
        """Run photo work, mapping bad input to 4xx and busy, dead or slow backends to 503; image paths
        made absolute."""
        try:
            result = await work
        except InvalidImage as exc:
            raise HTTPException(exc.status_code, error_message(exc)) from exc
        except BackendUnavailable as exc:
            raise unavailable(exc) from exc
        except TimeoutError as exc:
            raise timed_out("The vision model") from exc
        base = str(request.base_url).rstrip("/")
        if isinstance(result, PredictResponse):
            for match in result.top_matches:
                match.path = base + match.path
        else:
            result.path = base + result.path
        return result

    async def _read_upload(self, file: UploadFile) -> bytes:
        data = await file.read(self.limits.max_image_bytes + 1)
        if len(data) > self.limits.max_image_bytes:
            raise HTTPException(413, f"The upload is over the limit of {self.limits.max_image_bytes / 2**20:.0f} MiB.")
        return data

    @api.post(
        "/predict/",
        response_model=PredictResponse,
        response_model_by_alias=True,
        responses=ERRORS,
        summary="Breeds and similar photos for an image URL (the Ray Serve tutorial's route)",
    )
    async def predict_url(self, request: Request, body: PredictRequest) -> PredictResponse:
        async def work() -> PredictResponse:
            return await self.photos.predict(await self.photos.fetch(body.url), body.k, body.n)

        return await self._photo_call(request, work())

    @api.post(
        "/api/v1/photos",
        response_model=PredictResponse,
        response_model_by_alias=True,
        responses=ERRORS,
        summary="Breeds, dog score and similar photos for an uploaded photo",
    )
    async def predict_upload(
        self,
        request: Request,
        file: UploadFile = File(description="The photo (JPEG, PNG, GIF, WebP, BMP, TIFF)."),
        k: int = Form(4, ge=1, le=118, description="How many top breeds filter the gallery search."),
        n: int | None = Form(None, ge=1, le=50, description="How many similar photos."),
    ) -> PredictResponse:
        data = await self._read_upload(file)
        return await self._photo_call(request, self.photos.predict(data, k, n))

    @api.post(
        "/api/v1/gallery",
        response_model=GalleryItem,
        status_code=201,
        responses=ERRORS,
        summary="Add a photo to the gallery",
    )
    async def add_to_gallery(
        self,
        request: Request,
        file: UploadFile = File(description="The photo."),
        label: str | None = Form(None, max_length=200, description="Its breed; empty: the predicted breed if it is a dog."),
    ) -> GalleryItem:
        data = await self._read_upload(file)
        source = f"upload:{file.filename or 'photo'}"
        return await self._photo_call(request, self.photos.add(data, label, source))

    @api.get(
        "/api/v1/gallery/{photo_id}/image",
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}}, 404: {"model": ErrorResponse}},
        summary="A gallery photo's image (JPEG)",
    )
    async def gallery_image(self, photo_id: int) -> Response:
        try:
            async with asyncio.timeout(self.limits.photo_timeout_s):
                (thumbnail,) = await call(self.gallery.thumbnails, [photo_id])
        except BackendUnavailable as exc:
            raise unavailable(exc) from exc
        except TimeoutError as exc:
            raise timed_out("The gallery") from exc
        if thumbnail is None:
            raise HTTPException(404, f"No photo {photo_id} in the gallery.")
        return Response(thumbnail, media_type="image/jpeg", headers={"Cache-Control": "public, max-age=86400"})

    @api.get(
        "/api/v1/ready",
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "A model deployment is not up."}},
        summary="Whether every model deployment answers",
    )
    async def ready(self) -> JSONResponse:
        answers = await asyncio.gather(*(self._probe(handle) for handle in self.backends.values()))
        statuses = dict(zip(self.backends, answers))
        readiness = Readiness(ready=all(s.ready for s in statuses.values()), deployments=statuses)
        return JSONResponse(readiness.model_dump(), status_code=200 if readiness.ready else 503)

    @staticmethod
    async def _probe(handle: DeploymentHandle, timeout_s: float = 5.0) -> DeploymentStatus:
        try:
            async with asyncio.timeout(timeout_s):
                return await handle.status.remote()
        except TimeoutError:
            return DeploymentStatus(ready=False, detail=f"no answer within {timeout_s:.0f} s")
        except Exception as exc:  # a dead or failing replica: report it, never fail the probe itself
            logger.warning("readiness probe of %s failed: %r", handle.deployment_name, exc)
            return DeploymentStatus(ready=False, detail=type(exc).__name__)
