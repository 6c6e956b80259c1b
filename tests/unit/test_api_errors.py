"""The API's one error table: each domain error becomes its status with the error's sentence, a
503 says when to come back, and anything unexpected is a 500 without its details."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from backend.api import errors
from shared.errors import (
    ArticleTooLong,
    BackendTimeout,
    BackendUnavailable,
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
    UnreachableUrl,
)

RAISED = {
    "too-long": (ArticleTooLong("The article is too long."), 413),
    "empty": (InvalidArticle("The article is empty."), 422),
    "big-image": (ImageTooLarge("The image is too large."), 413),
    "not-an-image": (InvalidImage("The file is not an image."), 422),
    "blocked": (BlockedUrl("The URL points to a non-public address.", "private_address"), 400),
    "unreachable": (UnreachableUrl("The URL answered HTTP 404.", "http_error"), 422),
    "no-photo": (PhotoNotFound("No photo 9 in the gallery."), 404),
    "busy": (BackendUnavailable("The summarizer is busy.", retry_after_s=2.4), 503),
    "slow": (BackendTimeout("The vision model did not answer within 45 s; try again."), 503),
    "bad-label": (InvalidLabel("label: control character U+0000 is not allowed"), 422),
    "no-key": (NotAuthenticated("An API key is needed."), 401),
    "no-scope": (NotAllowed("The API key 'reader' does not have the 'write' scope this needs."), 403),
    "key-reused": (IdempotencyConflict("Idempotency-Key: already used for another photo."), 409),
    "limited": (RateLimited("Too many requests.", retry_after_s=0.2), 429),
}


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    errors.install(app)

    @app.get("/raise/{name}")
    async def raise_it(name: str) -> None:
        if name == "bug":
            raise KeyError("internal detail")
        raise RAISED[name][0]

    return TestClient(app, raise_server_exceptions=False)


@pytest.mark.parametrize("name", RAISED)
def test_each_domain_error_is_its_status_with_its_sentence(client: TestClient, name: str):
    error, status = RAISED[name]
    # Serve's proxy puts the request id in the request's headers (here, the client does).
    response = client.get(f"/raise/{name}", headers={"X-Request-ID": f"case-{name}"})
    assert (response.status_code, response.json()) == (status, {"detail": str(error), "request_id": f"case-{name}"})


def test_an_unavailable_backend_says_when_to_try_again(client: TestClient):
    assert client.get("/raise/busy").headers["retry-after"] == "2"
    assert client.get("/raise/slow").headers["retry-after"] == "5"
    assert client.get("/raise/limited").headers["retry-after"] == "1"  # rounded up: never before the next token


def test_a_missing_key_says_how_to_authenticate(client: TestClient):
    assert client.get("/raise/no-key").headers["www-authenticate"] == "Bearer"


def test_an_unexpected_error_is_a_500_without_its_details(client: TestClient):
    response = client.get("/raise/bug", headers={"X-Request-ID": "case-bug"})
    assert response.status_code == 500 and "internal detail" not in response.text
    assert response.json()["request_id"] == "case-bug"  # what to quote in a report


def test_every_status_of_the_table_is_documented():
    assert {status for _, status in errors.HTTP_STATUS} <= set(errors.DESCRIPTIONS)
