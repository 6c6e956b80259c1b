"""The HTTP API: the Ray Serve tutorials' routes plus a versioned JSON API.

Each route decodes HTTP, makes one call of the model client, and encodes the answer; errors are mapped
to HTTP answers in one place (backend/api/errors.py). No model code runs here.
"""

# No `from __future__ import annotations` here: Serve ships this class to replicas by value, and
# FastAPI must evaluate the route annotations (SummarizeRequest, ...) from the function objects.
import asyncio
import base64
import functools
import logging
import time
from typing import Any

import ray
from fastapi import Depends, FastAPI, File, Form, Header, Query, Request, Security, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi_swagger import patch_fastapi
from ray import serve
from ray.serve.handle import DeploymentHandle

from backend.api import errors
from backend.api.auth import Access, Caller, KeyRing
from backend.api.errors import ERRORS, LIMITED_ERRORS, status_of
from backend.api.request_ids import request_id
from backend.api.schemas import (
    BatchPhotoResult,
    BatchResponse,
    GalleryItem,
    GalleryList,
    HeatMap,
    PhotoMatch,
    PredictRequest,
    PredictResponse,
    RelabelRequest,
    SummarizeRequest,
    SummarizeResponse,
)
from backend.client import ModelClient, PhotoAnswer
from backend.models.analysis import ImageAnalysis
from backend.models.index import StoredPhoto
from shared.config import Limits
from shared.errors import ImageTooLarge
from shared.images import png_bytes
from shared.rate_limit import RateLimit
from shared.schemas import Readiness, SummarizeOptions

api = FastAPI(
    title="Retriever",
    version="0.1.0",
    description=(
        "Article summaries and dog photos served by Ray Serve. `GET /Summarizer?txt=...` and "
        "`POST /predict/` are the Ray Serve tutorials' routes; `/api/v1/...` is the typed API. "
        "The web UI is at [/ui](/ui)."
    ),
    # FastAPI's own pages load Swagger UI and ReDoc from a CDN; fastapi-swagger serves Swagger UI from
    # the app, so that the docs (and their Authorize button) work offline.
    docs_url=None,
    redoc_url=None,
    swagger_ui_oauth2_redirect_url=None,
)
patch_fastapi(api, redirect_from_root_to_docs=False)
errors.install(api)


def openapi_without_unset_examples(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, less the `"example": {}` that every query and header parameter gets once Serve
    has pickled the app: FastAPI's "no example" sentinel does not survive the copy, so each parameter
    looks as if it had one, and Swagger UI fills the `{}` in as the value to send."""
    if app.openapi_schema is None:
        schema = FastAPI.openapi(app)  # cached on the app, and returned as that same dict
        for operation in (op for path in schema["paths"].values() for op in path.values()):
            for parameter in operation.get("parameters", []):
                if parameter.get("example") == {}:
                    del parameter["example"]
    return app.openapi_schema


api.openapi = functools.partial(openapi_without_unset_examples, api)  # the pickled copy: bound to itself
logger = logging.getLogger("ray.serve")
bearer = HTTPBearer(
    auto_error=False,
    description="An API key (RETRIEVER_API_KEYS): `Authorization: Bearer <secret>`; none when no key is configured.",
)


def caller(scope: str, limited: bool = False) -> Any:
    """A route's dependency: who calls, once their key has `scope` and, on an expensive (`limited`)
    route, they are within their rate (backend/api/auth.py)."""

    async def admit(request: Request, credentials: HTTPAuthorizationCredentials | None = Security(bearer)) -> Caller:
        access: Access = serve.get_replica_context().servable_object.access  # this replica's Api
        address = request.client.host if request.client else "unknown"
        who = access.admit(address, credentials.credentials if credentials else None, scope, limited)
        request.state.key = who.key
        return who

    return Depends(admit)


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
        "key": getattr(request.state, "key", None),  # the API key's name, never its secret
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


async def predict_response(request: Request, answer: PhotoAnswer) -> PredictResponse:
    analysis = answer.analysis
    # The overlay's PNG in a worker thread: encoding takes milliseconds the event loop owes other requests.
    explanation = await asyncio.to_thread(heat_map, answer) if answer.explanation else None
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
        explanation=explanation,
    )


def heat_map(answer: PhotoAnswer) -> HeatMap:
    explanation = answer.explanation
    if explanation.heat is None:
        return HeatMap(breed=None, probability=None, heat=None, image=None, unavailable=explanation.unavailable)
    image = "data:image/png;base64," + base64.b64encode(png_bytes(answer.overlay)).decode()
    return HeatMap(
        breed=explanation.breed,
        probability=explanation.probability,
        heat=explanation.heat.round(4).tolist(),
        image=image,
    )


def batch_result(filename: str | None, answer: ImageAnalysis | Exception, top: int) -> BatchPhotoResult:
    if isinstance(answer, Exception):
        return BatchPhotoResult(filename=filename, status=status_of(answer), error=str(answer))
    return BatchPhotoResult(
        filename=filename,
        status=200,
        is_dog=answer.is_dog,
        dog_score=answer.dog_score,
        best_guess=answer.best_guess,
        breeds=dict(answer.top_breeds(top)),
        model=answer.model,
    )


def gallery_item(request: Request, photo: StoredPhoto) -> GalleryItem:
    return GalleryItem(
        id=photo.id,
        label=photo.label,
        label_source=photo.label_source,
        source=photo.source,
        added_by=photo.added_by,
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
        self.access = Access(KeyRing.from_environment())

    def reconfigure(self, config: dict) -> None:
        """serve_config.yaml's user_config: the rate limit of the expensive routes (null: none),
        changed live by `serve deploy`."""
        limit = config.get("rate_limit")
        self.access.set_rate_limit(RateLimit.model_validate(limit) if limit else None)

    async def _summarize(self, request: Request, text: str, options: SummarizeOptions) -> SummarizeResponse:
        started = time.perf_counter()
        result = await self.models.summarize(text, options)
        request.state.model = result.model
        return SummarizeResponse(
            summary=result.summary,
            model=result.model,
            pieces=result.pieces,
            sentences=result.sentences,
            timings={"model_ms": result.model_ms, "total_ms": (time.perf_counter() - started) * 1000},
        )

    @api.get("/", include_in_schema=False)
    async def home(self) -> RedirectResponse:
        return RedirectResponse("/ui/")

    @api.get(
        "/Summarizer",
        response_class=PlainTextResponse,
        responses=LIMITED_ERRORS,
        summary="Summarize (the Ray Serve tutorial's route)",
        description="Returns the summary as the response body. For long articles use POST /api/v1/summarize: "
        "URLs are limited in length.",
    )
    async def tutorial_summarize(
        self, request: Request, txt: str = Query(description="The article."), _: Caller = caller("read", limited=True)
    ) -> str:
        return (await self._summarize(request, txt, SummarizeOptions())).summary

    @api.post(
        "/api/v1/summarize", response_model=SummarizeResponse, responses=LIMITED_ERRORS, summary="Summarize an article"
    )
    async def summarize(
        self, request: Request, body: SummarizeRequest, _: Caller = caller("read", limited=True)
    ) -> SummarizeResponse:
        text = body.text if body.url is None else await self.models.fetch_article(body.url)
        return await self._summarize(request, text, body.options)

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
        responses=LIMITED_ERRORS,
        summary="Breeds and similar photos for an image URL (the Ray Serve tutorial's route)",
    )
    async def predict_url(
        self, request: Request, body: PredictRequest, _: Caller = caller("read", limited=True)
    ) -> PredictResponse:
        data = await self.models.fetch(body.url)
        answer = await self.models.find(data, body.k, body.n, explain=body.explain, explain_breed=body.explain_breed)
        return await predict_response(request, answer)

    @api.post(
        "/api/v1/photos",
        response_model=PredictResponse,
        response_model_by_alias=True,
        responses=LIMITED_ERRORS,
        summary="Breeds, dog score and similar photos for an uploaded photo",
    )
    async def predict_upload(
        self,
        request: Request,
        _: Caller = caller("read", limited=True),
        file: UploadFile = File(description="The photo (JPEG, PNG, GIF, WebP, BMP, TIFF)."),
        k: int = Form(4, ge=1, le=118, description="How many top breeds filter the gallery search."),
        n: int | None = Form(None, ge=1, le=50, description="How many similar photos."),
        explain: bool = Form(False, description="Also answer where the model looked (`explanation`)."),
        explain_breed: str | None = Form(
            None, max_length=200, description="The breed to explain (implies explain); default: the top breed."
        ),
    ) -> PredictResponse:
        data = await self._read_upload(file)
        answer = await self.models.find(data, k, n, explain=explain, explain_breed=explain_breed)
        return await predict_response(request, answer)

    @api.post(
        "/api/v1/photos/batch",
        response_model=BatchResponse,
        responses=LIMITED_ERRORS,
        summary="Breeds and dog scores for several uploaded photos, one result each, in order",
        description="A photo that cannot be used gets its own error and status; the others are answered. "
        "The batch counts as one request against the rate limit.",
    )
    async def predict_batch(
        self,
        _: Caller = caller("read", limited=True),
        file: list[UploadFile] = File(
            description="The photos: one `file` part each (JPEG, PNG, GIF, WebP, BMP, TIFF)."
        ),
        top: int = Form(3, ge=1, le=118, description="How many of the most likely breeds each result lists."),
    ) -> BatchResponse:
        self.models.check_batch([part.size or 0 for part in file])  # before reading a byte of them
        answers = await self.models.analyse_photos([await part.read() for part in file])
        return BatchResponse(results=[batch_result(p.filename, a, top) for p, a in zip(file, answers, strict=True)])

    @api.post(
        "/api/v1/gallery",
        response_model=GalleryItem,
        status_code=201,
        responses={
            200: {"model": GalleryItem, "description": "Sent before with this Idempotency-Key: the first answer."},
            **errors.responses(409, 429),
            **ERRORS,
        },
        summary="Add a photo to the gallery",
    )
    async def add_to_gallery(
        self,
        request: Request,
        response: Response,
        file: UploadFile = File(description="The photo."),
        label: str | None = Form(
            None, max_length=200, description="Its breed; empty: the predicted breed if it is a dog."
        ),
        idempotency_key: str | None = Header(
            None,
            max_length=200,
            pattern=r"^[\x21-\x7e]+$",
            description="Any unique string (a UUID): the same add sent again within a day, with this key, "
            "stores nothing and answers the first photo (200), so a failed add can be retried safely.",
        ),
        who: Caller = caller("write", limited=True),
    ) -> GalleryItem:
        source = f"upload:{file.filename or 'photo'}"
        idempotency = (who.identity, idempotency_key) if idempotency_key else None
        photo, created = await self.models.add(await self._read_upload(file), label, source, who.key, idempotency)
        response.status_code = 201 if created else 200
        return gallery_item(request, photo)

    @api.get(
        "/api/v1/gallery",
        response_model=GalleryList,
        responses=errors.responses(401, 403, 422, 503),
        summary="The gallery's photos, newest first",
    )
    async def list_gallery(
        self,
        request: Request,
        offset: int = Query(0, ge=0),
        limit: int = Query(50, ge=1, le=500),
        label: str | None = Query(None, max_length=200, description="Only photos with this label."),
        _: Caller = caller("read"),
    ) -> GalleryList:
        page = await self.models.gallery_page(offset, limit, label)
        photos = [gallery_item(request, photo) for photo in page.photos]
        return GalleryList(total=page.total, offset=offset, limit=limit, photos=photos)

    @api.get(
        "/api/v1/gallery/{photo_id}",
        response_model=GalleryItem,
        responses=errors.responses(401, 403, 404, 503),
        summary="A gallery photo's label, source, who added it and when",
    )
    async def gallery_photo(self, request: Request, photo_id: int, _: Caller = caller("read")) -> GalleryItem:
        return gallery_item(request, await self.models.photo(photo_id))

    @api.patch(
        "/api/v1/gallery/{photo_id}",
        response_model=GalleryItem,
        responses=errors.responses(401, 403, 404, 422, 503),
        summary="Relabel a gallery photo",
        description="Searches on every replica see the new label within the gallery's refresh_interval_s.",
    )
    async def relabel_photo(
        self, request: Request, photo_id: int, body: RelabelRequest, _: Caller = caller("write")
    ) -> GalleryItem:
        return gallery_item(request, await self.models.relabel(photo_id, body.label))

    @api.delete(
        "/api/v1/gallery/{photo_id}",
        status_code=204,
        response_class=Response,
        responses=errors.responses(401, 403, 404, 503),
        summary="Delete a gallery photo: its row, image and embedding",
        description="No search on any replica returns it once the gallery's refresh_interval_s has passed.",
    )
    async def delete_photo(self, photo_id: int, _: Caller = caller("write")) -> Response:
        await self.models.delete(photo_id)
        return Response(status_code=204)

    @api.get(
        "/api/v1/gallery/{photo_id}/image",
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}}, **errors.responses(401, 403, 404, 503)},
        summary="A gallery photo's image (JPEG)",
    )
    async def gallery_image(self, photo_id: int, _: Caller = caller("read")) -> Response:
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
