"""A UI session's home, piece by piece: the cookie the replica sets (and what it does with a page whose
home is another replica), the proxy's copy of it into Serve's session header, and the router's choices
(on Ray's own stand-in replicas, as Ray's router tests do). They run together across live replicas in
tests/ui/test_sessions.py and tests/ui/test_scale_in.py."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from ui.sessions import COOKIE, MOVED, HomeReplicaRouter, SessionCookie, SessionHeaderFromCookie, needs_its_session


def replica(name: str) -> TestClient:
    """A client of an app served by the replica `name`, mounted at /ui as Serve mounts it."""
    app = Starlette(routes=[Route("/{path:path}", lambda request: PlainTextResponse("ok"), methods=["GET", "POST"])])
    return TestClient(SessionCookie(app, replica=name), base_url="http://ui.test/ui", root_path="/ui")


def test_a_browser_without_a_home_is_given_this_replica() -> None:
    with replica("abc123") as client:
        page = client.get("/")
    assert page.status_code == 200
    assert page.headers["x-retriever-replica"] == "abc123"
    cookie = page.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=abc123;") and "Path=/ui" in cookie and "HttpOnly" in cookie


def test_a_session_at_home_is_served_and_not_given_a_cookie_again() -> None:
    with replica("abc123") as client:
        client.cookies.set(COOKIE, "abc123")
        answer = client.post("/gradio_api/queue/join", json={})
    assert answer.status_code == 200 and answer.text == "ok"
    assert "set-cookie" not in answer.headers


@pytest.mark.parametrize("path", ["/gradio_api/queue/join", "/gradio_api/upload", "/gradio_api/file=/tmp/x.png"])
def test_a_page_whose_home_is_gone_is_told_to_reload(path: str) -> None:
    with replica("abc123") as client:
        client.cookies.set(COOKIE, "gone99")
        answer = client.post(path) if "file=" not in path else client.get(path)
    assert answer.status_code == 410
    assert answer.json() == {"detail": MOVED}
    assert "set-cookie" not in answer.headers  # the same answer until the page is reloaded


def test_reloading_that_page_makes_this_replica_its_home() -> None:
    with replica("abc123") as client:
        client.cookies.set(COOKIE, "gone99")
        page = client.get("/")
        navigation = client.get("/login", headers={"Sec-Fetch-Dest": "document"})
    for answer in (page, navigation):
        assert answer.status_code == 200 and answer.headers["set-cookie"].startswith(f"{COOKIE}=abc123;")


def test_until_it_is_reloaded_that_page_keeps_its_old_home() -> None:
    """What the stale page loads meanwhile (a script for a tab, the heartbeat) does not move it here."""
    with replica("abc123") as client:
        client.cookies.set(COOKIE, "gone99")
        script = client.get("/assets/Index-x1.js", headers={"Sec-Fetch-Dest": "script"})
        heartbeat = client.get("/gradio_api/heartbeat/3xk2")
    for answer in (script, heartbeat):
        assert answer.status_code == 200 and "set-cookie" not in answer.headers


def test_which_requests_need_their_session() -> None:
    assert needs_its_session("/ui/gradio_api/queue/join")
    assert needs_its_session("/ui/gradio_api/queue/data")
    assert needs_its_session("/ui/gradio_api/upload")
    assert not needs_its_session("/ui/")
    assert not needs_its_session("/ui/config")
    assert not needs_its_session("/ui/assets/index.js")
    assert not needs_its_session("/ui/gradio_api/info")
    assert not needs_its_session("/ui/gradio_api/heartbeat/3xk2")
    assert not needs_its_session("/ui/gradio_api/app_id")


def proxied_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The headers Serve's proxy sees after the middleware."""
    seen: list = []

    async def proxy(scope, receive, send) -> None:
        seen.extend(scope["headers"])

    call = SessionHeaderFromCookie(proxy)({"type": "http", "headers": headers}, None, None)
    # In a thread of its own: after the browser tests, Playwright's event loop runs in this one.
    with ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, call).result()
    return seen


def test_the_proxy_hands_the_cookie_to_the_router_as_the_session() -> None:
    headers = proxied_headers([(b"cookie", f"access-token=s3cret; {COOKIE}=abc123".encode())])
    assert (b"x-session-id", b"abc123") in headers
    assert [name for name, _ in headers].count(b"x-session-id") == 1


def test_the_cookie_wins_over_a_session_header_and_a_bad_cookie_is_ignored() -> None:
    assert proxied_headers([(b"x-session-id", b"other"), (b"cookie", f"{COOKIE}=abc123".encode())]) == [
        (b"cookie", f"{COOKIE}=abc123".encode()),
        (b"x-session-id", b"abc123"),
    ]
    mangled = [(b"cookie", f"{COOKIE}=ab/../c".encode())]
    assert proxied_headers(mangled) == mangled
    assert proxied_headers([(b"x-session-id", b"pinned")]) == [(b"x-session-id", b"pinned")]


def test_the_router_keeps_a_draining_replica_as_its_sessions_home_only() -> None:
    from ray.serve._private.common import DeploymentHandleSource, DeploymentID, RequestMetadata
    from ray.serve._private.test_utils import FakeRunningReplica
    from ray.serve.request_router import PendingRequest

    async def chosen(router: HomeReplicaRouter, session: str) -> str:
        request = PendingRequest(args=[], kwargs={}, metadata=RequestMetadata("r", "i", session_id=session))
        ranked = await router.choose_replicas(list(router.curr_replicas.values()), request)
        return ranked[0][0].replica_id.unique_id

    async def routes() -> None:  # the router runs on the loop it was made on
        router = HomeReplicaRouter(DeploymentID(name="GradioUI", app_name="ui"), DeploymentHandleSource.UNKNOWN)
        old, new = FakeRunningReplica("old"), FakeRunningReplica("new")
        router.update_replicas([old, new])
        assert {await chosen(router, "") for _ in range(4)} == {"old", "new"}  # new sessions take turns
        assert await chosen(router, "old") == "old"

        router.update_replicas([new])  # Serve stops routing to `old`: it drains
        assert await chosen(router, "old") == "old"  # its sessions stay until it is gone
        assert {await chosen(router, "") for _ in range(4)} == {"new"}  # no new session starts there

        router.on_replica_actor_died(old.replica_id)  # a call or probe found it dead
        assert await chosen(router, "old") == "new"  # a new home (whose replica tells the page to reload)

    with ThreadPoolExecutor(1) as pool:  # after the browser tests, Playwright's loop runs in this thread
        pool.submit(asyncio.run, routes()).result()
