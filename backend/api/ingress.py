"""The HTTP API: the Ray Serve tutorials' routes plus a versioned JSON API.

Each route decodes HTTP, makes one call of the model client, and encodes the answer; errors are mapped
to HTTP answers in one place (backend/api/errors.py). No model code runs here.
"""

# No `from __future__ import annotations` here: Serve ships this class to replicas by value, and
# FastAPI must evaluate the route annotations (SummarizeRequest, ...) from the function objects.
import logging
import time

import ray
from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from ray import serve
from ray.serve.handle import DeploymentHandle

from backend.api import errors
from backend.api.errors import ERRORS
from backend.api.request_ids import request_id
from backend.api.schemas import (
    GalleryItem,
    PhotoMatch,
    PredictRequest,
    PredictResponse,
    SummarizeRequest,
    SummarizeResponse,
)
from backend.client import ModelClient, PhotoAnswer
from backend.models.index import StoredPhoto
from shared.config import Limits
from shared.errors import ImageTooLarge
from shared.schemas import Readiness, SummarizeOptions

api = FastAPI(
    title="Retriever",
    version="0.1.0",
    description=(
        "Article summaries and dog photos served by Ray Serve. `GET /Summarizer?txt=...` and "
        "`POST /predict/` are the Ray Serve tutorials' routes; `/api/v1/...` is the typed API. "
        "The web UI is at [/ui](/ui)."
    ),
)
errors.install(api)
logger = logging.getLogger("ray.serve")


@api.middleware("http")
async def log_request(request: Request, call_next):
    """One structured line per request (Serve's own access line is off for this deployment): fields of
    their own in JSON logs (serve_config.yaml's logging_config), the line's end in text logs."""
    started = time.perf_counter()
    response = await call_next(request)
    route = request.scope.get("route")
    fields = {
        "route": route.path if route else request.url.path,  # the pattern: /api/v1/gallery/{photo_id}/image
        "status": response.status_code,
        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
        "model_version": getattr(request.state, "model", None),
    }
    line = " ".join(f"{key}={value}" for key, value in fields.items() if value is not None)
    # The id by hand: Serve's request context (which its log filter reads) has not reached the middleware.
    logger.info("%s %s", request.method, line, extra={**fields, "request_id": request_id(request.headers)})
    return response


def metrics_url() -> str | None:
    """Where this node's metrics agent serves Prometheus' text format (a node started without one: None)."""
    here = ray.get_runtime_context().get_node_id()
    node = next((n for n in ray.nodes() if n["NodeID"] == here), None)
    if not node or not node.get("MetricsExportPort"):
        return None
    return f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"


def image_url(request: Request, photo_id: int) -> str:
    """Where this server serves a gallery photo's image."""
    return f"{str(request.base_url).rstrip('/')}/api/v1/gallery/{photo_id}/image"


def predict_response(request: Request, answer: PhotoAnswer) -> PredictResponse:
    analysis = answer.analysis
    request.state.model = analysis.model
    return PredictResponse(
        probabilities=dict(analysis.top_breeds(len(analysis.labels))),
        top_matches=[
            PhotoMatch(id=m.id, label=m.label, path=image_url(request, m.id), similarity=m.similarity)
            for m in answer.matches
        ],
        dog_score=analysis.dog_score,
        is_dog=analysis.is_dog,
        best_guess=analysis.best_guess,
        model=analysis.model,
    )


def gallery_item(request: Request, photo: StoredPhoto) -> GalleryItem:
    return GalleryItem(
        id=photo.id,
        label=photo.label,
        label_source=photo.label_source,
        source=photo.source,
        added_at=photo.added_at.isoformat(),
        path=image_url(request, photo.id),
    )


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
        self.models = ModelClient(summarizer, vision, gallery, limits)
        self.limits = limits
        self.metrics_url = metrics_url()

    async def _summarize(self, request: Request, text: str, options: SummarizeOptions) -> SummarizeResponse:
        started = time.perf_counter()
        result = await self.models.summarize(text, options)
        request.state.model = result.model
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
    async def tutorial_summarize(self, request: Request, txt: str = Query(description="The article.")) -> str:
        return (await self._summarize(request, txt, SummarizeOptions())).summary

    @api.post("/api/v1/summarize", response_model=SummarizeResponse, responses=ERRORS, summary="Summarize an article")
    async def summarize(self, request: Request, body: SummarizeRequest) -> SummarizeResponse:
        return await self._summarize(request, body.text, body.options)

    # ----------------------------------------------------------------------- dog photos

    async def _read_upload(self, file: UploadFile) -> bytes:
        data = await file.read(self.limits.max_image_bytes + 1)
        if len(data) > self.limits.max_image_bytes:
            raise ImageTooLarge(f"The upload is over the limit of {self.limits.max_image_bytes / 2**20:.0f} MiB.")
        return data

    @api.post(
        "/predict/",
        response_model=PredictResponse,
        response_model_by_alias=True,
        responses=ERRORS,
        summary="Breeds and similar photos for an image URL (the Ray Serve tutorial's route)",
    )
    async def predict_url(self, request: Request, body: PredictRequest) -> PredictResponse:
        answer = await self.models.find(await self.models.fetch(body.url), body.k, body.n)
        return predict_response(request, answer)

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
        answer = await self.models.find(await self._read_upload(file), k, n)
        return predict_response(request, answer)

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
        label: str | None = Form(
            None, max_length=200, description="Its breed; empty: the predicted breed if it is a dog."
        ),
    ) -> GalleryItem:
        source = f"upload:{file.filename or 'photo'}"
        photo = await self.models.add(await self._read_upload(file), label, source)
        return gallery_item(request, photo)

    @api.get(
        "/api/v1/gallery/{photo_id}/image",
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}}, **errors.responses(404, 503)},
        summary="A gallery photo's image (JPEG)",
    )
    async def gallery_image(self, photo_id: int) -> Response:
        thumbnail = await self.models.thumbnail(photo_id)
        return Response(thumbnail, media_type="image/jpeg", headers={"Cache-Control": "public, max-age=86400"})

    @api.get(
        "/api/v1/ready",
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "A model deployment is not up."}},
        summary="Whether every model deployment answers",
    )
    async def ready(self) -> JSONResponse:
        readiness = (await self.models.readiness()).model_copy(update={"metrics_url": self.metrics_url})
        return JSONResponse(readiness.model_dump(), status_code=200 if readiness.ready else 503)
