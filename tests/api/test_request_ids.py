"""Request ids: every answer carries X-Request-ID (the client's when it is sane, else a new one), error
bodies repeat it, and the replicas' log lines of that request carry it on every deployment it touched,
so that a user's report can be found in the logs. The logs are read where Serve writes them, in the
session app's Ray temp dir."""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path

import httpx
import pytest

from retriever.local import LocalServe
from tests.conftest import PHOTOS

pytestmark = pytest.mark.serve

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@pytest.fixture(scope="module")
def client(serve_app: str):
    with httpx.Client(base_url=serve_app, timeout=120) as client:
        yield client


def log_lines(running: LocalServe, deployment: str, needle: str, timeout_s: float = 20) -> list[str]:
    """The lines of `deployment`'s replica logs that contain `needle` (waiting for them a little)."""
    logs = Path(running.temp_dir) / "session_latest" / "logs" / "serve"
    deadline = time.monotonic() + timeout_s
    while True:
        lines = [
            line
            for path in logs.glob(f"replica_api_{deployment}_*.log")
            for line in path.read_text(errors="replace").splitlines()
            if needle in line
        ]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.5)


def test_a_photo_request_is_found_by_its_id_in_every_deployment_it_touched(
    client: httpx.Client, serve_deployment: tuple[LocalServe, dict]
):
    report = f"report-{uuid.uuid4().hex[:12]}"
    photo = {"file": ("dog.jpg", PHOTOS["dog"].read_bytes(), "image/jpeg")}
    answer = client.post("/api/v1/photos", files=photo, headers={"X-Request-ID": report})
    assert answer.status_code == 200 and answer.headers["x-request-id"] == report
    running = serve_deployment[0]
    for deployment in ("Api", "Vision", "Gallery"):
        assert log_lines(running, deployment, report), f"no {deployment} log line carries {report}"
    [request_line] = log_lines(running, "Api", report)
    # The Api's own line: route, status, duration and the model version that answered.
    model = answer.json()["model"]
    assert re.search(rf"POST route=/api/v1/photos status=200 duration_ms=[\d.]+ model_version={model}$", request_line)
    assert any("CALL analyse OK" in line for line in log_lines(running, "Vision", report))
    assert any("CALL search OK" in line for line in log_lines(running, "Gallery", report))


def test_an_error_body_names_the_request_id(client: httpx.Client):
    refused = client.post("/predict/", json={"url": "http://10.1.2.3/dog.jpg"}, headers={"X-Request-ID": "ticket-7"})
    assert refused.status_code == 400
    assert refused.headers["x-request-id"] == "ticket-7"
    assert refused.json() == {
        "detail": "The URL points to a non-public address (10.1.2.3); it is not fetched.",
        "request_id": "ticket-7",
    }
    missing = client.get("/api/v1/gallery/987654/image")
    assert missing.status_code == 404
    assert missing.json()["request_id"] == missing.headers["x-request-id"]
    assert UUID.fullmatch(missing.headers["x-request-id"])  # none sent: Serve made one


@pytest.mark.parametrize(
    "sent",
    ["two words", "x" * 129, "-leading-dash", 'quote"injection', "ünïcode"],
    ids=["space", "too-long", "leading-dash", "quote", "non-ascii"],
)
def test_an_insane_client_id_is_replaced(client: httpx.Client, sent: str):
    answer = client.get("/api/v1/gallery/987654/image", headers={"X-Request-ID": sent.encode()})
    assert answer.status_code == 404
    assert answer.headers["x-request-id"] != sent
    assert UUID.fullmatch(answer.headers["x-request-id"])
    assert answer.json()["request_id"] == answer.headers["x-request-id"]
