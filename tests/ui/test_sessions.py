"""The UI on two replicas, as the default config runs it: many browser sessions and gradio_client
programs at once, each kept on one replica (ui/sessions.py), every answer in the page that asked; and
150 open pages on one replica.

Where a session lives is read from the replicas themselves: every answer names the replica that served
it (`x-retriever-replica`, set in the replica), so spreading is proven, not assumed."""

from __future__ import annotations

import asyncio
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, closing
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, Response, expect

from backend.models.text import split_sentences
from bench.load import GradioProtocol
from tests.conftest import PHOTOS
from ui.examples import APOLLO_11, SOURDOUGH
from ui.sessions import COOKIE, REPLICA_HEADER

pytestmark = pytest.mark.serve

TIMEOUT_MS = 120_000
SESSIONS = 6
ROUNDS = 2
SUMMARY_SENTENCES = 3  # the extractive summary's default length
REPLICA = REPLICA_HEADER.decode()


class Session:
    """One browser context: its page, and the replica named by every answer it got from the UI."""

    def __init__(self, browser: Browser, url: str) -> None:
        self.context = browser.new_context()
        self.replicas: list[str | None] = []
        self.context.on("response", self._record)
        self.page: Page = self.context.new_page()
        self.page.goto(url)
        expect(self.page.locator("#summarize")).to_be_visible(timeout=TIMEOUT_MS)

    def _record(self, response: Response) -> None:
        if "/ui/" in response.url:
            self.replicas.append(response.headers.get(REPLICA))

    def ask(self, article: str, photo: Path) -> None:
        """Starts a summary and a photo's analysis, without waiting for either."""
        self.page.get_by_role("tab", name="Article").click()
        self.page.locator("#article textarea").fill(article)
        self.page.locator("#summarize").click()
        self.page.get_by_role("tab", name="Dog photo").click()
        self.page.locator("#photo input[type=file]").set_input_files(str(photo))
        expect(self.page.locator("#photo img")).to_be_visible(timeout=TIMEOUT_MS)
        self.page.locator("#find").click()

    def answers(self, article: str, dog: bool) -> tuple[list[str], str]:
        """(the summary's sentences, the photo's verdict) once the answers to this article and photo
        have arrived: the previous round asked for the other ones, so nothing stale matches."""
        verdict = self.page.locator("#photo-verdict")
        expect(verdict).to_contain_text("A dog" if dog else "Not a dog", timeout=TIMEOUT_MS)
        self.page.get_by_role("tab", name="Article").click()
        summary = self.page.locator("#summary textarea")
        expect(summary).to_have_value(
            re.compile("|".join(map(re.escape, split_sentences(article)))), timeout=TIMEOUT_MS
        )
        for _ in range(TIMEOUT_MS // 250):  # until all of it has streamed in
            sentences = picked(article, summary.input_value())
            if len(sentences) == SUMMARY_SENTENCES:
                break
            self.page.wait_for_timeout(250)
        return sentences, verdict.inner_text()


def picked(article: str, summary: str) -> list[str]:
    """The article's sentences a summary is made of (none if it holds anything else)."""
    sentences = [s for s in split_sentences(article) if s in summary]
    return sentences if summary == " ".join(sentences) else []


def test_browser_sessions_stay_on_their_replica_and_get_their_own_answers(
    browser: Browser, serve_app: str, screenshots_dir: Path
) -> None:
    sessions = [Session(browser, serve_app + "/ui/") for _ in range(SESSIONS)]
    try:
        for round_ in range(ROUNDS):
            # Each session its own pair, swapped every round: an answer in the wrong page would show.
            asked = [
                (APOLLO_11, PHOTOS["dog"]) if (i + round_) % 2 else (SOURDOUGH, PHOTOS["cat"]) for i in range(SESSIONS)
            ]
            for session, (article, photo) in zip(sessions, asked, strict=True):
                session.ask(article, photo)
            for session, (article, photo) in zip(sessions, asked, strict=True):
                sentences, verdict = session.answers(article, dog=photo == PHOTOS["dog"])
                assert len(sentences) == SUMMARY_SENTENCES, sentences
                assert "Not a dog" not in verdict if photo == PHOTOS["dog"] else "A dog" not in verdict
        sessions[0].page.screenshot(path=screenshots_dir / "session-on-two-replicas.png", full_page=True)

        homes = []
        for session in sessions:
            named = set(session.replicas)
            assert len(named) == 1 and None not in named, named  # every answer from one replica
            (home,) = named
            cookie = next(c for c in session.context.cookies() if c["name"] == COOKIE)
            assert cookie["value"] == home and cookie["path"] == "/ui"
            homes.append(home)
        assert len(set(homes)) == 2, homes  # the sessions were spread over both replicas
    finally:
        for session in sessions:
            session.context.close()


def test_gradio_client_programs_at_once_each_stay_on_one_replica(serve_app: str) -> None:
    from gradio_client import Client, handle_file

    def program(number: int) -> str:
        """Summaries and photos from one program; the replica its cookie names."""
        article = APOLLO_11 if number % 2 else SOURDOUGH
        with closing(Client(serve_app + "/ui/", verbose=False, download_files=False)) as client:
            for _ in range(ROUNDS):
                summary, _ = client.predict(article, api_name="/summarize")
                assert len(picked(article, summary)) == SUMMARY_SENTENCES, summary
                verdict, *_ = client.predict(handle_file(str(PHOTOS["dog2"])), "", 3, False, api_name="/find")
                assert verdict.startswith("**A dog**"), verdict
            return client.cookies[COOKIE]

    with ThreadPoolExecutor(SESSIONS) as pool:
        homes = list(pool.map(program, range(SESSIONS)))
    assert len(set(homes)) == 2, homes  # spread over both replicas, and none lost an event


OPEN_PAGES = 150  # more than the 100 requests at once a UI replica took before


def test_one_replica_holds_150_open_pages_and_still_answers(serve_app: str) -> None:
    """Every open page holds a request on its replica (Gradio's heartbeat stream). With OPEN_PAGES of
    them on one replica (heartbeats with one cookie, as from that many tabs), a page there still loads
    and summarizes."""

    async def pages_then_a_summary() -> tuple[set[str], int]:
        limits = httpx.Limits(max_connections=OPEN_PAGES + 8)
        async with httpx.AsyncClient(base_url=serve_app, timeout=60, limits=limits) as client:
            replicas = {(await client.get("/ui/")).headers[REPLICA]}  # its cookie: all below go there
            async with AsyncExitStack() as heartbeats:
                for _ in range(OPEN_PAGES):
                    url = f"/ui/gradio_api/heartbeat/{uuid.uuid4().hex}"
                    page = await heartbeats.enter_async_context(client.stream("GET", url))
                    assert page.status_code == 200
                    replicas.add(page.headers[REPLICA])
                config = await client.get("/ui/config")
                replicas.add(config.headers[REPLICA])
                status, _ = await GradioProtocol(client).call("summarize", [APOLLO_11, 3])
        return replicas, status

    with ThreadPoolExecutor(1) as pool:  # Playwright's loop runs in this thread
        replicas, status = pool.submit(asyncio.run, pages_then_a_summary()).result()
    assert len(replicas) == 1 and status == 200, (replicas, status)
