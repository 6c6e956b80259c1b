"""The API's request line (backend/api/ingress.py's middleware): one record per request whose fields are
what Serve's JSON logs write as keys (logging_config encoding JSON): route (the pattern), status,
duration, model version and the request id."""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from ray._common.formatters import JSONFormatter

from backend.api.ingress import log_request


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_each_request_is_one_structured_line():
    app = FastAPI()
    app.middleware("http")(log_request)

    @app.get("/api/v1/things/{thing_id}")
    async def thing(request: Request, thing_id: int) -> dict:
        request.state.model = "dog-breeds/3"  # as the photo routes record the model that answered
        return {"id": thing_id}

    records = Records()
    logger = logging.getLogger("ray.serve")
    logger.addHandler(records)
    previous_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        answer = TestClient(app).get("/api/v1/things/7", headers={"X-Request-ID": "ticket-9"})
        missing = TestClient(app).get("/nowhere")
    finally:
        logger.removeHandler(records)
        logger.setLevel(previous_level)
    assert answer.status_code == 200 and missing.status_code == 404

    first, second = (json.loads(JSONFormatter().format(record)) for record in records.records)
    assert first["message"].startswith("GET route=/api/v1/things/{thing_id} status=200 duration_ms=")
    assert {key: first[key] for key in ("route", "status", "model_version", "request_id")} == {
        "route": "/api/v1/things/{thing_id}",
        "status": 200,
        "model_version": "dog-breeds/3",
        "request_id": "ticket-9",
    }
    assert first["duration_ms"] >= 0
    assert (second["route"], second["status"], second["model_version"]) == ("/nowhere", 404, None)
