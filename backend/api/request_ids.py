"""Request ids: every answer carries `X-Request-ID`, and the same id is in the log lines of every
deployment the request touched.

Serve's proxy does the work: its RequestIdMiddleware takes the client's `x-request-id` (or makes a
UUID), hands it to each replica with the request (Serve writes it in their log lines) and sends it back.
`SaneRequestId` runs in front of it in the proxy (retriever.proxy) and drops a client's id that is not
sane, so that Serve makes one instead: logs and answers never carry a client's 10 kB of text or a forged
log field.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Receive, Scope, Send

HEADER = b"x-request-id"
SANE = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")  # UUIDs, ULIDs, trace ids, "report-42"


class SaneRequestId:
    """Keeps a client's first `x-request-id` if it is sane; drops it otherwise (and any repeat)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            ids = [value for name, value in scope["headers"] if name == HEADER]
            if ids and (len(ids) > 1 or not SANE.fullmatch(ids[0])):
                kept = [(name, value) for name, value in scope["headers"] if name != HEADER]
                if SANE.fullmatch(ids[0]):
                    kept.append((HEADER, ids[0]))
                scope = {**scope, "headers": kept}
        await self.app(scope, receive, send)


def request_id(headers) -> str | None:
    """The id Serve gave the request (it sits in the request's headers by the time a route runs)."""
    return headers.get("x-request-id")
