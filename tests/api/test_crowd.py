"""A crowd at the real proxy (issue 21, P8, the bench's B7 made small): 200 clients send at the same
moment, half a dog photo, half a 600-word article. Each is answered or refused cleanly: a right answer,
or 503 with Retry-After and a sentence; nothing fails, hangs or is cut off, and the app is ready after.
How many are refused depends on what the door has learnt of the models' speed, so only their form is
checked here (tests/unit/test_deadline_door.py checks who is refused)."""

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from bench.crowd import send_crowd
from bench.load import ARTICLE_600
from tests.conftest import PHOTOS

pytestmark = pytest.mark.serve
CLIENTS = 200


def test_a_crowd_is_answered_or_refused_cleanly(serve_app):
    article = ARTICLE_600.read_text(encoding="utf-8")
    # In a thread of its own: after the browser tests, Playwright's event loop runs in this one.
    with ThreadPoolExecutor(1) as pool:
        crowd = send_crowd(serve_app, CLIENTS, timeout_s=120, photo=PHOTOS["dog"].read_bytes(), article=article)
        answers, _ = pool.submit(asyncio.run, crowd).result()
    assert len(answers) == CLIENTS
    assert {a.status for a in answers} <= {"200", "503"}, sorted({a.status for a in answers})
    for answer in answers:
        body = json.loads(answer.body)
        if answer.status == "503":
            assert "busy" in body["detail"] and "try again" in body["detail"], body
            assert int(answer.retry_after) >= 1 and body["request_id"]
        elif answer.kind == "photo":
            assert body["is_dog"] and max(body["probabilities"], key=body["probabilities"].get) == "malamute"
        else:
            assert body["summary"] and body["summary"].split(". ")[0] in article
    assert any(a.status == "200" for a in answers if a.kind == "photo")
    assert any(a.status == "200" for a in answers if a.kind == "summary")
    assert httpx.get(serve_app + "/api/v1/ready", timeout=30).status_code == 200
