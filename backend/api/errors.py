"""The API's one mapping from errors to HTTP answers: every error body is
{"detail": "<sentence>", "request_id": "<the X-Request-ID>"}, so that a user's report can be found in the logs.

Routes raise domain errors (shared/errors.py) or let them pass; `install` registers one handler per row
of HTTP_STATUS, and the OpenAPI `ERRORS` table is made from the same rows. Anything else is logged once
and answered 500 without a traceback.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from backend.api.request_ids import request_id
from backend.api.schemas import ErrorResponse
from shared.errors import (
    ArticleTooLong,
    BackendUnavailable,
    BlockedArticleUrl,
    BlockedUrl,
    IdempotencyConflict,
    ImageTooLarge,
    InvalidArticle,
    InvalidImage,
    InvalidLabel,
    NotAllowed,
    NotAuthenticated,
    PhotoNotFound,
    RateLimited,
    TooManyPhotos,
    UnknownBreed,
)

logger = logging.getLogger("ray.serve")

# Most specific first: the first row an error is an instance of decides.
HTTP_STATUS: list[tuple[type[Exception], int]] = [
    (ArticleTooLong, 413),
    (ImageTooLarge, 413),
    (TooManyPhotos, 413),
    (BlockedUrl, 400),
    (BlockedArticleUrl, 400),
    (InvalidArticle, 422),
    (InvalidImage, 422),
    (InvalidLabel, 422),
    (UnknownBreed, 422),
    (NotAuthenticated, 401),
    (NotAllowed, 403),
    (PhotoNotFound, 404),
    (IdempotencyConflict, 409),
    (RateLimited, 429),
    (BackendUnavailable, 503),
]

DESCRIPTIONS = {
    400: (
        "The image or article URL is refused (not http(s), a non-public address, too many redirects), "
        "or the body is not UTF-8."
    ),
    401: "No API key, or one that is not known (the WWW-Authenticate header says: Bearer).",
    403: "The API key lacks the scope the route needs (read, write).",
    404: "No such gallery photo.",
    409: "The Idempotency-Key was used before for another photo or label.",
    413: "The text or image is larger than the configured limit, or a batch holds too many photos or bytes.",
    422: "Input that cannot be used: empty or non-text text, a file that is not a readable image, "
    "an image URL that cannot be fetched, a label with control characters or over 100 characters, "
    "a breed to explain that the model does not know, or a request that does not match the schema.",
    429: "The caller is over its request rate; the Retry-After header says when to try again.",
    503: "A model deployment is busy (its queue is full), restarting, or did not answer in time; "
    "the Retry-After header says when to try again.",
}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` of a route that can answer these error statuses."""
    return {status: {"model": ErrorResponse, "description": DESCRIPTIONS[status]} for status in statuses}


# What the routes that take input can answer, and the expensive ones (rate-limited) besides.
ERRORS = responses(400, 401, 403, 413, 422, 503)
LIMITED_ERRORS = responses(400, 401, 403, 413, 422, 429, 503)


def error_answer(request: Request, status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = ErrorResponse(detail=detail, request_id=request_id(request.headers))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def status_of(exc: Exception) -> int:
    return next(status for error, status in HTTP_STATUS if isinstance(exc, error))


async def domain_error(request: Request, exc: Exception) -> JSONResponse:
    headers = None
    if isinstance(exc, BackendUnavailable):
        headers = {"Retry-After": str(max(1, round(exc.retry_after_s)))}  # whole seconds, at least 1
    elif isinstance(exc, RateLimited):
        headers = {"Retry-After": str(math.ceil(exc.retry_after_s))}  # never before the next token
    elif isinstance(exc, NotAuthenticated):
        headers = {"WWW-Authenticate": "Bearer"}
    return error_answer(request, status_of(exc), str(exc), headers)


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return error_answer(request, 500, "Internal error; it has been logged with this request_id.")


async def readable_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """One readable line per problem."""
    problems = []
    for error in exc.errors():
        if error["type"] == "json_invalid":  # loc is ("body", offset)
            reason = error.get("ctx", {}).get("error", "")
            problems.append(f"body: not valid JSON at character {error['loc'][-1]} ({reason})")
            continue
        where = ".".join(str(part) for part in error["loc"][1:]) or error["loc"][0]
        # A validator's own sentence, without pydantic's "Value error, " before it.
        message = str(error["ctx"]["error"]) if error["type"] == "value_error" else error["msg"]
        problems.append(f"{where}: {message}")
    return error_answer(request, 422, "; ".join(problems))


async def readable_http_error(request: Request, exc: StarletteHTTPException) -> Response:
    """FastAPI answers a body it cannot decode with "There was an error parsing the body": say why."""
    if isinstance(exc.__cause__, UnicodeDecodeError):
        detail = f"body: not UTF-8 text (byte {exc.__cause__.start} cannot be decoded)"
        return error_answer(request, 400, detail)
    if exc.status_code in (204, 304):  # no body allowed
        return Response(status_code=exc.status_code, headers=exc.headers)
    return error_answer(request, exc.status_code, str(exc.detail), exc.headers)


def install(app: FastAPI) -> None:
    """Register the handlers on the API's app."""
    for error, _ in HTTP_STATUS:
        app.add_exception_handler(error, domain_error)
    app.add_exception_handler(RequestValidationError, readable_validation_error)
    app.add_exception_handler(StarletteHTTPException, readable_http_error)
    app.add_exception_handler(Exception, unexpected_error)
