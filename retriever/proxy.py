"""What Serve's HTTP proxy runs before its own middlewares: named by RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH
(retriever.local sets it for a local cluster; docs/scale-out.md says how on a cluster's nodes)."""

from __future__ import annotations

from starlette.middleware import Middleware

from backend.api.deadline import DeadlineAdmission
from backend.api.request_ids import SaneRequestId
from ui.sessions import SessionHeaderFromCookie

CALLBACK = "retriever.proxy:middlewares"


def middlewares() -> list[Middleware]:
    """Serve's HTTP proxy callback: a client's insane request id dropped (the API's logs), a browser's
    session cookie handed to the UI's request router, and the API's model routes admitted by deadline."""
    return [Middleware(SaneRequestId), Middleware(SessionHeaderFromCookie), Middleware(DeadlineAdmission)]
