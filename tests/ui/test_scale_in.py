"""A UI replica scaled in under open pages, in Debian's Chromium: it drains first. Its pages' running
summaries arrive, what they start while it drains (a photo's analysis, with its thumbnails) still
reaches it, and once it has stopped they are told to reload and work again on the replica left.

The session's app is scaled from 2 UI replicas to 1 and back; the drain is cut to DRAIN_S for the test
(the default config lets a replica drain for 150 s: the longest summary it may hold)."""

from __future__ import annotations

import copy
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from backend.models.text import split_sentences
from retriever.local import LocalServe
from tests.conftest import PHOTOS, home_of, wait_until_idle
from ui.examples import APOLLO_11, SOURDOUGH
from ui.sessions import MOVED

pytestmark = pytest.mark.serve

TIMEOUT_MS = 120_000
DRAIN_S = 30
# About 90,000 characters each (under the 100,000 limit): seconds of work for the summarizer on 2 cores.
ARTICLES = [("\n\n".join([text] * (90_000 // len(text)))) for text in (APOLLO_11, SOURDOUGH)]


def test_a_ui_replica_scaled_in_finishes_its_pages_events_then_sends_them_to_reload(
    browser: Browser, serve_deployment: tuple[LocalServe, dict], screenshots_dir: Path
) -> None:
    running, config = serve_deployment
    opened: list[tuple[BrowserContext, Page]] = []
    try:
        while len({home_of(context) for context, _ in opened}) < 2:  # a page on each replica
            assert len(opened) < 6, "every new page went to the same replica"
            context = browser.new_context()
            opened.append((context, context.new_page()))
            opened[-1][1].goto(running.url + "/ui/")
            expect(opened[-1][1].locator("#summarize")).to_be_visible(timeout=TIMEOUT_MS)
        # The first page on each replica: [(its home, (its context, the page))]
        sessions = list({home_of(context): (context, page) for context, page in reversed(opened)}.items())
        pages = [page for _, (_, page) in sessions]

        # A replica drains with the config it runs: first cut the drain on both, then scale in.
        running.deploy(ui_replicas(config, 2, drain_s=DRAIN_S))
        for page, article in zip(pages, ARTICLES, strict=True):
            page.locator("#article textarea").fill(article)
            page.locator("#summarize").click()
        with ThreadPoolExecutor(1) as pool:  # Playwright's loop is this thread's: deploy beside it
            scaled_in = pool.submit(running.deploy, ui_replicas(config, 1, drain_s=DRAIN_S))
            wait_for_a_stopping_ui_replica()
            for page in pages:  # started while one of the two replicas drains
                find(page, k=6)
            for page, article in zip(pages, ARTICLES, strict=True):
                assert_summary_of(page, article)
                assert_similar_photos(page, 6)
            scaled_in.result(timeout=DRAIN_S + 120)

        for page in pages:  # the drained replica has stopped: its page is told, the other answered
            find(page, k=3, upload=False)
        told = [i for i, page in enumerate(pages) if shows_moved_or_similar(page, 3) == "moved"]
        assert len(told) == 1, told
        (gone,) = told
        pages[gone].screenshot(path=screenshots_dir / "ui-replica-scaled-in.png", full_page=True)
        pages[gone].reload()
        expect(pages[gone].locator("#summarize")).to_be_visible(timeout=TIMEOUT_MS)  # the app is built
        wait_until_idle(pages[gone], TIMEOUT_MS)
        find(pages[gone], k=3)
        assert_similar_photos(pages[gone], 3)
        context, staying = sessions[gone][1][0], sessions[1 - gone][0]
        assert home_of(context) == staying  # its new home is the replica left
    finally:
        for context, _ in opened:
            context.close()
        running.deploy(config)  # back to 2 UI replicas


def ui_replicas(config: dict, replicas: int, drain_s: float) -> dict:
    """A copy of a serve config whose GradioUI runs `replicas` replicas, each draining up to drain_s."""
    config = copy.deepcopy(config)
    ui = next(app for app in config["applications"] if app["name"] == "ui")
    gradio = next(d for d in ui["deployments"] if d["name"] == "GradioUI")
    gradio["autoscaling_config"] = {**gradio["autoscaling_config"], "min_replicas": replicas, "max_replicas": replicas}
    gradio["graceful_shutdown_timeout_s"] = drain_s
    return config


def wait_for_a_stopping_ui_replica(timeout_s: float = 30) -> None:
    from ray import serve

    deadline = time.monotonic() + timeout_s
    while "STOPPING" not in serve.status().applications["ui"].deployments["GradioUI"].replica_states:
        assert time.monotonic() < deadline, "no UI replica was stopped"
        time.sleep(0.1)


def find(page: Page, k: int, upload: bool = True) -> None:
    """Asks for k similar photos: of a dog photo it uploads, or of the one the page holds."""
    page.get_by_role("tab", name="Dog photo").click()
    page.locator("#matches input[type=number]").fill(str(k))
    page.locator("#matches input[type=number]").press("Enter")
    expect(page.locator("#matches input[type=number]")).to_have_value(str(k))
    if upload:
        page.locator("#photo input[type=file]").set_input_files(str(PHOTOS["dog2"]))
        expect(page.locator("#photo img")).to_be_visible(timeout=TIMEOUT_MS)
    page.locator("#find").click()


def assert_summary_of(page: Page, article: str) -> None:
    """The page's summary is three sentences of its own article."""
    page.get_by_role("tab", name="Article").click()
    summary = page.locator("#summary textarea")
    expect(summary).not_to_have_value("", timeout=TIMEOUT_MS)
    # The article's sentences found in the summary, in its order (splitting the summary itself would
    # not do: the segmenter reads some joined sentences as one).
    in_article = dict.fromkeys(split_sentences(article))
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while True:
        text = summary.input_value()
        sentences = sorted((s for s in in_article if s in text), key=text.index)
        if len(sentences) >= 3:  # all of it has streamed
            break
        assert time.monotonic() < deadline, text
        page.wait_for_timeout(250)
    assert text == " ".join(sentences) and len(sentences) == 3, text


def assert_similar_photos(page: Page, k: int) -> None:
    """The page shows a dog and k similar photos, every thumbnail loaded."""
    page.get_by_role("tab", name="Dog photo").click()
    expect(page.locator("#photo-verdict")).to_contain_text("A dog", timeout=TIMEOUT_MS)
    similar = page.locator("#similar img")
    expect(similar).to_have_count(k, timeout=TIMEOUT_MS)
    for image in similar.all():  # thumbnails load lazily: bring each into view
        image.scroll_into_view_if_needed()
    page.wait_for_function(
        "() => [...document.querySelectorAll('#similar img')].every(img => img.complete)", timeout=TIMEOUT_MS
    )
    widths = similar.evaluate_all("imgs => imgs.map(img => img.naturalWidth)")
    assert all(width > 0 for width in widths), widths


def shows_moved_or_similar(page: Page, k: int) -> str:
    page.get_by_role("tab", name="Dog photo").click()
    moved, similar = page.get_by_text(MOVED), page.locator("#similar img")
    deadline = time.monotonic() + 60
    while not moved.count() and similar.count() != k:
        assert time.monotonic() < deadline, "neither an answer nor the message"
        page.wait_for_timeout(100)
    return "moved" if moved.count() else "similar"
