"""API keys and rate limits on the running app: every route with no key, a wrong key, a read key and a
write key; the OpenAPI security scheme; 429 with Retry-After and recovery. The session app reads its
keys from a file (tests/conftest.py: api_keys_file), re-read when it changes: the module writes keys
there and empties it again afterwards, which opens the API as before."""

import io
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from PIL import Image

from backend.api.auth import FILE_CHECK_INTERVAL_S
from tests.api.test_request_ids import log_lines
from tests.conftest import PHOTOS, with_deployment_config

pytestmark = pytest.mark.serve
KEYS = {"reader": "r-7f3a9c", "writer": "w-41bd02", "reader2": "r2-c0ffee"}
SCOPES = {"reader": "read", "writer": "write", "reader2": "read"}


def bearer(name: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name] if name in KEYS else 'not-a-key'}"} if name else {}


@contextmanager
def keys_in_force(serve_app: str, api_keys_file: Path, keys: dict[str, str] = KEYS) -> Iterator[None]:
    """The session app with these keys (name: secret) in its keys file, and open again afterwards."""
    api_keys_file.write_text("".join(f"{name}={secret}:{SCOPES[name]}\n" for name, secret in keys.items()))
    with httpx.Client(base_url=serve_app, timeout=30) as client:
        try:
            deadline = time.monotonic() + 30
            while client.get("/api/v1/gallery").status_code != 401:  # a replica has read the file
                assert time.monotonic() < deadline
                time.sleep(0.3)
            time.sleep(FILE_CHECK_INTERVAL_S + 0.5)  # and so has every other Api replica
            yield
        finally:
            api_keys_file.write_text("")
            while client.get("/api/v1/gallery").status_code != 200:
                assert time.monotonic() < deadline + 60
                time.sleep(0.3)
            time.sleep(FILE_CHECK_INTERVAL_S + 0.5)  # open on every replica before the next test


@pytest.fixture(scope="module")
def keyed_app(serve_app: str, api_keys_file: Path) -> Iterator[str]:
    with keys_in_force(serve_app, api_keys_file):
        yield serve_app


@pytest.fixture(scope="module")
def client(keyed_app: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=keyed_app, timeout=120) as client:
        yield client


def jpeg(name: str) -> bytes:
    out = io.BytesIO()
    Image.open(PHOTOS[name]).convert("RGB").rotate(90, expand=True).save(out, "JPEG")  # not a gallery photo
    return out.getvalue()


def seed_photo_id(client) -> int:
    return client.get("/api/v1/gallery", params={"limit": 1}, headers=bearer("reader")).json()["photos"][0]["id"]


READ_ROUTES = {
    "tutorial summary": lambda c, h, _: c.get("/Summarizer", params={"txt": "A short article. It has two."}, headers=h),
    "summary": lambda c, h, _: c.post("/api/v1/summarize", json={"text": "One line. And another."}, headers=h),
    "tutorial predict": lambda c, h, server: c.post(
        "/predict/", json={"url": f"{server.url}/photos/dog-on-porch.jpg"}, headers=h
    ),
    "photo": lambda c, h, _: c.post("/api/v1/photos", files={"file": ("d.jpg", jpeg("dog"), "image/jpeg")}, headers=h),
    "gallery list": lambda c, h, _: c.get("/api/v1/gallery", headers=h),
    "gallery photo": lambda c, h, _: c.get(f"/api/v1/gallery/{seed_photo_id(c)}", headers=h),
    "gallery image": lambda c, h, _: c.get(f"/api/v1/gallery/{seed_photo_id(c)}/image", headers=h),
}


@pytest.mark.parametrize("route", READ_ROUTES)
def test_read_routes_need_a_key_with_the_read_scope(client, image_server, route):
    call = READ_ROUTES[route]
    for key, status in [(None, 401), ("wrong", 401), ("writer", 403), ("reader", 200)]:
        response = call(client, bearer(key), image_server)
        assert response.status_code == status, (key, response.text[:300])
        if status == 401:
            assert response.headers["WWW-Authenticate"] == "Bearer"
            assert "API key" in response.json()["detail"] and response.json()["request_id"]
        if status == 403:
            assert response.json()["detail"] == "The API key 'writer' does not have the 'read' scope this needs."


def test_write_routes_need_a_key_with_the_write_scope_and_record_its_name(client, serve_deployment):
    before = client.get("/api/v1/gallery", params={"limit": 1}, headers=bearer("reader")).json()["total"]
    photo = seed_photo_id(client)
    write_calls = {
        "add": lambda h: client.post(
            "/api/v1/gallery", files={"file": ("c.jpg", jpeg("cheetah"), "image/jpeg")}, data={"label": "x"}, headers=h
        ),
        "relabel": lambda h: client.patch(f"/api/v1/gallery/{photo}", json={"label": "changed"}, headers=h),
        "delete": lambda h: client.delete(f"/api/v1/gallery/{photo}", headers=h),
    }
    for name, call in write_calls.items():
        for key, status in [(None, 401), ("wrong", 401), ("reader", 403)]:
            assert call(bearer(key)).status_code == status, (name, key)
    untouched = client.get(f"/api/v1/gallery/{photo}", headers=bearer("reader")).json()
    assert untouched["label"] != "changed"
    assert client.get("/api/v1/gallery", params={"limit": 1}, headers=bearer("reader")).json()["total"] == before

    added = write_calls["add"](bearer("writer"))
    assert added.status_code == 201 and added.json()["added_by"] == "writer"
    new = added.json()["id"]
    # The key's name is in the request's log line; no secret is in any log.
    running = serve_deployment[0]
    [line] = log_lines(running, "Api", added.headers["x-request-id"])
    assert re.search(r"POST route=/api/v1/gallery status=201 .* key=writer$", line), line
    logs = Path(running.temp_dir) / "session_latest" / "logs"
    for path in logs.rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            assert not any(secret in text for secret in KEYS.values()), path
    relabelled = client.patch(f"/api/v1/gallery/{new}", json={"label": "cheetah"}, headers=bearer("writer"))
    assert relabelled.status_code == 200 and relabelled.json()["label"] == "cheetah"
    assert client.delete(f"/api/v1/gallery/{new}", headers=bearer("writer")).status_code == 204


def test_health_and_docs_stay_open_and_openapi_declares_the_bearer_scheme(client):
    assert client.get("/api/v1/ready").status_code == 200
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": spec["components"]["securitySchemes"]["HTTPBearer"]["description"],
    }
    for path, method in [("/api/v1/gallery", "post"), ("/api/v1/gallery/{photo_id}", "delete"), ("/predict/", "post")]:
        assert spec["paths"][path][method]["security"] == [{"HTTPBearer": []}]
    assert "security" not in spec["paths"]["/api/v1/ready"]["get"]
    # No parameter claims an example it does not have (Swagger UI would send it as the value).
    parameters = [p for path in spec["paths"].values() for op in path.values() for p in op.get("parameters", [])]
    assert parameters and all("example" not in p for p in parameters)


def test_over_its_rate_a_key_gets_429_with_retry_after_then_recovers(client, serve_deployment):
    """A rate of 0.5 requests per second with bursts of 3, set live through the Api's user_config. The app
    may run two Api replicas (autoscaled under an earlier test's load), each with its own buckets: within
    seven quick requests one is refused either way."""
    running, config = serve_deployment
    limited = with_deployment_config(config, "Api", user_config={"rate_limit": {"requests_per_s": 0.5, "burst": 3}})
    running.deploy(limited)
    try:
        summary = {"text": "One line. And another."}
        answers = [client.post("/api/v1/summarize", json=summary, headers=bearer("reader")) for _ in range(7)]
        assert [a.status_code for a in answers[:3]] == [200, 200, 200]
        refused = next(a for a in answers if a.status_code == 429)
        assert 1 <= int(refused.headers["Retry-After"]) <= 2
        assert "0.5 per second" in refused.json()["detail"] and refused.json()["request_id"]
        # Another key has a bucket of its own; routes that run no model are not counted.
        assert client.post("/api/v1/summarize", json=summary, headers=bearer("reader2")).status_code == 200
        assert client.get("/api/v1/gallery", headers=bearer("reader")).status_code == 200
        time.sleep(1 / 0.5)  # a whole token's time after the last request: every replica's bucket has one
        assert client.post("/api/v1/summarize", json=summary, headers=bearer("reader")).status_code == 200
    finally:
        running.deploy(config)
