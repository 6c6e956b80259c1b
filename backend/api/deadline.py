"""The API's front door in Serve's HTTP proxy (retriever.proxy): a request to a route that runs a model is
let through only while the requests already through predict its answer within the deadline
(backend/admission.py); past it, 503 with Retry-After at once, without a replica being called. A crowd
costs the proxy a few header parses, not a queue that cannot drain in time.

The proxy times each request from the moment it lets it through to the end of the answer, so the
prediction covers every queue behind it (the Api replicas', the models'). Refusals from further in (a
full queue, a limit) do not count as answers: they say nothing of how fast answers come.
"""

from __future__ import annotations

import os
import uuid

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend import telemetry
from backend.admission import Admission
from backend.client import model_admission
from shared.config import Limits
from shared.errors import BackendUnavailable

# The environment variable a proxy reads its deadline from (seconds; "off": none); unset: the API's
# default, Limits.admit_within_s. retriever.local sets it from the config for a local cluster.
DEADLINE_ENV = "RETRIEVER_ADMIT_WITHIN_S"
# The API's routes that run a model, by the deployment they wait on.
MODEL_ROUTES = {
    ("POST", "/api/v1/photos"): "Vision",
    ("POST", "/predict/"): "Vision",
    ("POST", "/api/v1/gallery"): "Vision",
    ("POST", "/api/v1/summarize"): "Summarizer",
    ("GET", "/Summarizer"): "Summarizer",
}


def deadline_from_environment() -> float | None:
    value = os.environ.get(DEADLINE_ENV, "").strip().lower()
    if value == "off":
        return None
    return float(value) if value else Limits().admit_within_s


class DeadlineAdmission:
    def __init__(self, app: ASGIApp, admission: Admission | None = None) -> None:
        self.app = app
        self.admission = admission or model_admission(deadline_from_environment())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        deployment = MODEL_ROUTES.get((scope.get("method"), scope.get("path"))) if scope["type"] == "http" else None
        if deployment is None:
            await self.app(scope, receive, send)
            return
        try:
            ticket = self.admission.admit(deployment)
        except BackendUnavailable as refusal:
            telemetry.rejections().inc(tags={"deployment": deployment, "reason": refusal.reason})
            await refused(refusal, scope, receive, send)
            return
        answered = True

        async def send_status(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start" and message["status"] in (429, 503):
                answered = False
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.admission.release(ticket, answered)


async def refused(refusal: BackendUnavailable, scope: Scope, receive: Receive, send: Send) -> None:
    """The API's error answer ({"detail", "request_id"}, Retry-After), made here: no replica was asked.
    The body is read and dropped first: a client still sending its upload would see the connection reset,
    not the answer."""
    while (await receive()).get("more_body"):
        pass
    sent = dict(scope["headers"]).get(b"x-request-id")
    request_id = sent.decode("latin-1") if sent else str(uuid.uuid4())
    retry_after = str(max(1, round(refusal.retry_after_s)))
    headers = {"Retry-After": retry_after, "X-Request-ID": request_id}
    response = JSONResponse({"detail": str(refusal), "request_id": request_id}, 503, headers=headers)
    await response(scope, receive, send)
