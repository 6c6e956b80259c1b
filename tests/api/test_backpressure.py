"""Backpressure: more summaries at once than can be answered in time are refused at once with 503 and
Retry-After, instead of waiting behind a queue that cannot drain in time; the rest are answered.
The UI's queue (Gradio's) is bounded the same way."""

import asyncio
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from backend.client import model_admission
from bench.load import GradioProtocol
from retriever.local import load_serve_config

pytestmark = pytest.mark.serve

ROOT = Path(__file__).resolve().parents[2]
ARTICLE = (ROOT / "bench" / "article_600_words.txt").read_text(encoding="utf-8")
AT_ONCE = 100  # well past the Summarizer's 4 ongoing + 32 queued per caller (serve_config.yaml)


async def flood(url: str) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=AT_ONCE)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        return await asyncio.gather(*(client.post("/api/v1/summarize", json={"text": ARTICLE}) for _ in range(AT_ONCE)))


def test_a_flood_of_summaries_is_answered_or_refused_with_retry_after(serve_app: str):
    """Past what can be answered in time, a summary is refused with 503, Retry-After and a message saying
    the summarizer is busy: by the deadline door (backend/admission.py) or by the Summarizer's own queue,
    whichever fills first (that depends on what the door has learnt from the summaries before; the queue
    alone is tested in tests/faults/test_ui_messages.py). None hangs, none fails otherwise."""
    # In a thread of its own: after the browser tests, Playwright's event loop runs in this one.
    with ThreadPoolExecutor(1) as pool:
        responses = pool.submit(asyncio.run, flood(serve_app)).result()  # an httpx timeout would raise: none hangs

    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) == {200, 503}, statuses
    assert statuses[200] >= model_admission(None).always_admit  # never fewer than the door always lets in
    for response in (r for r in responses if r.status_code == 503):
        assert response.json()["detail"].startswith("The summarizer is busy"), response.json()
        assert int(response.headers["retry-after"]) >= 1
        assert response.json()["request_id"] == response.headers["x-request-id"]
    for response in (r for r in responses if r.status_code == 200):
        assert response.json()["summary"]

    after = httpx.post(f"{serve_app}/api/v1/summarize", json={"text": ARTICLE}, timeout=120)
    assert after.status_code == 200 and after.json()["summary"]


async def flood_ui(url: str, at_once: int) -> tuple[list[httpx.Response], int]:
    """`at_once` long summaries joined to the UI's queue together (they arrive far faster than they
    drain), then a short one once it has drained."""
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=httpx.Limits(max_connections=64)) as client:
        ui = GradioProtocol(client)
        joins = await asyncio.gather(*(ui.join("summarize", [ARTICLE, 3]) for _ in range(at_once)))
        for _ in range(120):  # a client that honours the answer tries again later
            status, _ = await ui.call("summarize", [ARTICLE.split("\n\n")[0], 3])
            if status != 503:
                break
            await asyncio.sleep(1)
    return [joined for joined, _ in joins], status


def test_a_full_ui_queue_refuses_more_and_serves_again_once_drained(serve_app: str):
    ui = load_serve_config(ROOT / "serve_config.yaml")["applications"][1]["args"]
    at_once = 4 * (ui["concurrency_limit"] + ui["max_queue_size"])
    with ThreadPoolExecutor(1) as pool:
        joins, status_after = pool.submit(asyncio.run, flood_ui(serve_app, at_once)).result()
    statuses = Counter(joined.status_code for joined in joins)
    assert set(statuses) == {200, 503} and statuses[200] >= ui["max_queue_size"], statuses
    refused = next(joined for joined in joins if joined.status_code == 503)
    assert f"Queue is full. Max size is {ui['max_queue_size']}" in refused.text
    assert status_after == 200
