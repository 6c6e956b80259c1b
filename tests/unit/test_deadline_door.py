"""The API's front door in the proxy (backend/api/deadline.py): a crowd past the deadline gets clean 503s
at once (its uploads read, not cut off), the rest their answers, and other routes are never held back.
Served by uvicorn on loopback as Serve's proxy serves it; the app behind the door is a stand-in for the
replicas (tests/api/test_crowd.py sends a crowd at the real proxy)."""

import asyncio
from concurrent.futures import ThreadPoolExecutor

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from backend.api.deadline import DeadlineAdmission
from backend.client import model_admission
from retriever.local import free_port

PHOTO = b"\xff\xd8" + b"x" * 200_000  # an upload large enough to arrive in pieces


def model_app(running: list[int]) -> Starlette:
    """Each photo takes 0.2 s of a one-at-a-time model; /api/v1/ready answers at once."""
    lock = asyncio.Lock()

    async def photos(request: Request) -> JSONResponse:
        size = len(await request.body())
        async with lock:
            running.append(1)
            await asyncio.sleep(0.2)
        return JSONResponse({"bytes": size})

    async def ready(_: Request) -> JSONResponse:
        return JSONResponse({"ready": True})

    return Starlette(routes=[Route("/api/v1/photos", photos, methods=["POST"]), Route("/api/v1/ready", ready)])


async def crowd(app, count: int) -> tuple[list[httpx.Response], httpx.Response]:
    """`count` uploads at once, each on a connection of its own."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        limits = httpx.Limits(max_connections=count)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=60) as client:
            await client.post("/api/v1/photos", files={"file": ("dog.jpg", PHOTO)})  # the door learns a photo's cost
            sent = [client.post("/api/v1/photos", files={"file": ("dog.jpg", PHOTO)}) for _ in range(count)]
            answers = await asyncio.gather(*sent)
            ready = await client.get("/api/v1/ready")
    finally:
        server.should_exit = True
        await serving
    return answers, ready


def run_crowd(app, count: int) -> tuple[list[httpx.Response], httpx.Response]:
    # In a thread of its own: after the browser tests, Playwright's event loop runs in this one.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, crowd(app, count)).result()


def test_a_crowd_past_the_deadline_is_refused_at_once_and_the_rest_answered():
    running: list[int] = []
    answers, ready = run_crowd(DeadlineAdmission(model_app(running), model_admission(2.0, always_admit=2)), 40)
    answered = [a for a in answers if a.status_code == 200]
    refused = [a for a in answers if a.status_code == 503]
    assert len(answered) + len(refused) == 40
    # 0.2 s a photo, one at a time: about 10 fit in 2 s; the rest are turned away, not queued.
    assert 5 <= len(answered) <= 12, len(answered)
    assert all(a.json()["bytes"] > len(PHOTO) for a in answered)  # each its own whole upload
    for refusal in refused:
        body = refusal.json()
        assert "The vision model is busy" in body["detail"] and "try again in" in body["detail"]
        assert int(refusal.headers["retry-after"]) >= 1 and body["request_id"] == refusal.headers["x-request-id"]
    assert len(running) == 1 + len(answered)  # a refused photo never reached the model
    assert ready.status_code == 200


def test_without_a_deadline_the_door_lets_everyone_through():
    running: list[int] = []
    answers, _ = run_crowd(DeadlineAdmission(model_app(running), model_admission(None, always_admit=2)), 12)
    assert [a.status_code for a in answers] == [200] * 12
