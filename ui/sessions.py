"""Browser sessions pinned to one UI replica, so that the UI can run on several.

Gradio keeps a session in one process: its queue joins an event on one request and streams the result
on another, uploads land on that replica's disk, and login tokens live in its memory. So every request
of a session must reach the replica that holds it:

- the replica that answers a browser without a home sets a cookie naming itself (`SessionCookie`);
  browsers send it with every request, including the ones that cannot carry a header (page loads,
  `<img>` downloads, the event stream), and gradio_client keeps the cookies of its first answer;
- Serve's proxy copies the cookie into Serve's session header (`session_header_from_cookie`, a proxy
  middleware), which Serve hands to the deployment's request router as `session_id`;
- `HomeReplicaRouter`, GradioUI's request router, sends the request to the replica named there. A
  request with no home, or whose home has gone, starts a session on the replica whose turn it is.

A replica being removed (scaled in, or replaced by a new version) stays its sessions' home while it
drains, so their running events finish and their answers' files still load. A page whose replica died
(or finished draining) gets a clear answer instead of Gradio's "session not found": its calls are
refused with 410 and a sentence saying to reload, and the reload makes a new home.
This module runs in the proxy (the router and the header) and in the replica (the cookie): no Gradio.
"""

from __future__ import annotations

import itertools
import re
import time
from typing import Any

from ray.serve.experimental.consistent_hash_router import ConsistentHashRouter
from ray.serve.request_router import PendingRequest, ReplicaID, RunningReplica
from starlette.requests import cookie_parser
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

COOKIE = "retriever-replica"
# Serve's session header (RAY_SERVE_SESSION_ID_HEADER_KEY's default): what the proxy gives the router.
SESSION_HEADER = b"x-session-id"
# Answers say which replica served them: how tests and operators see where a session lives.
REPLICA_HEADER = b"x-retriever-replica"
REPLICA_ID = re.compile(r"[A-Za-z0-9]{1,64}")  # Serve's replica ids are 8 letters and digits
# How long a removed replica may stay its sessions' home: longer than any graceful_shutdown_timeout_s
# the UI is given. It leaves sooner when a call or probe finds it dead, as Serve's router does.
DRAIN_LIMIT_S = 600.0
MOVED = "The server that held this page stopped, so its uploads and answers are gone. Reload the page to go on."


def home_of(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The replica named by the session cookie in these ASGI headers, if any (and well-formed)."""
    for name, value in headers:
        if name == b"cookie":
            home = cookie_parser(value.decode("latin-1")).get(COOKIE)
            if home is not None and REPLICA_ID.fullmatch(home):
                return home
    return None


class SessionHeaderFromCookie:
    """Proxy middleware: the session cookie as Serve's session header. A client's own session header
    is kept only when it sends no cookie (a program may pin itself to a replica that way)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and (home := home_of(scope["headers"])) is not None:
            headers = [(name, value) for name, value in scope["headers"] if name != SESSION_HEADER]
            scope = {**scope, "headers": [*headers, (SESSION_HEADER, home.encode())]}
        await self.app(scope, receive, send)


class HomeReplicaRouter(ConsistentHashRouter):
    """GradioUI's request router: a request goes to the replica its session names, waiting for it if
    it is busy (never elsewhere: no other replica has the session), even while that replica drains. A
    request without a live home starts a session: the running replicas take turns (then the next one,
    if that one is full).

    Ray's ConsistentHashRouter is the base for its routing loop, which keeps each request with the
    replica chosen for it (the default router hands a chosen replica to the oldest waiting request)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._turns = itertools.count()
        # Replicas Serve has stopped routing to that are still draining: id -> (replica, until when)
        self._draining: dict[ReplicaID, tuple[RunningReplica, float]] = {}

    def update_replicas(self, replicas: list[RunningReplica]) -> None:
        """Serve's new replica set. A replica left out of it is draining (Serve stops it only once its
        requests are done, or at its graceful_shutdown_timeout_s): it stays in the router's set, as the
        home of its sessions only, until it is found dead or DRAIN_LIMIT_S has passed."""
        now = time.monotonic()
        running = {replica.replica_id for replica in replicas}
        for replica_id, replica in self._replicas.items():
            if replica_id not in running and replica_id not in self._draining:
                self._draining[replica_id] = (replica, now + DRAIN_LIMIT_S)
        self._draining = {
            replica_id: (replica, until)
            for replica_id, (replica, until) in self._draining.items()
            if replica_id not in running and until > now
        }
        super().update_replicas([*replicas, *(replica for replica, _ in self._draining.values())])

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        self._draining.pop(replica_id, None)
        super().on_replica_actor_died(replica_id)

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None
    ) -> list[list[RunningReplica]]:
        if pending_request is not None:
            pending_request.routing_context.should_backoff = True
        session = pending_request.metadata.session_id if pending_request is not None else ""
        home = next((r for r_id, r in self._replicas.items() if session and r_id.unique_id == session), None)
        if home is not None:
            return [[home]]
        live = [replica for replica in candidate_replicas if replica.replica_id not in self._draining]
        if not live:
            return []
        ordered = sorted(live, key=lambda replica: replica.replica_id.unique_id)
        turn = next(self._turns) % len(ordered)
        return [[replica] for replica in ordered[turn:] + ordered[:turn]]


class SessionCookie:
    """Replica middleware: names this replica as the home of a browser that has none (or that reloads
    a page whose home is gone), says so on every answer, and refuses the calls of a page whose home was
    another replica (which is gone: the router never sends a live home's requests elsewhere)."""

    def __init__(self, app: ASGIApp, replica: str) -> None:
        self.app = app
        self.replica = replica

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        home = home_of(scope["headers"])
        if home is not None and home != self.replica and needs_its_session(scope["path"]):
            # No new cookie here: every call of the stale page says the same until it is reloaded.
            moved = JSONResponse({"detail": MOVED}, status_code=410, headers={REPLICA_HEADER.decode(): self.replica})
            await moved(scope, receive, send)
            return
        cookie = None
        # A stale page keeps its cookie until it is reloaded: its lazily loaded assets must not make
        # this replica its home while its uploads and state are still the dead replica's.
        if home is None or (home != self.replica and is_page_load(scope)):
            path = scope.get("root_path") or "/"
            cookie = f"{COOKIE}={self.replica}; Path={path}; HttpOnly; SameSite=Lax".encode()

        async def send_marked(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (REPLICA_HEADER, self.replica.encode())]
                if cookie is not None:
                    headers.append((b"set-cookie", cookie))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_marked)


def needs_its_session(path: str) -> bool:
    """Whether a request to `path` only makes sense on the replica that holds its session: Gradio's
    calls (queue, uploads, files, events), not page loads, static assets, the API description, the
    heartbeat (which a stale page keeps sending: it is answered, harmlessly, wherever it lands) or the
    app id (which Gradio's page polls after a lost connection, and reloads itself once it answers)."""
    _, api, call = path.partition("/gradio_api/")
    return bool(api) and not call.startswith(("info", "heartbeat/", "app_id"))


def is_page_load(scope: Scope) -> bool:
    """A browser loading the page itself (a navigation, or a GET of the UI's root)."""
    root = scope.get("root_path", "")
    navigation = (b"sec-fetch-dest", b"document") in scope["headers"]
    return scope["method"] == "GET" and (navigation or scope["path"] in (root, root + "/"))
