"""The UI's failure messages through the real app (the same paths tests/unit/test_ui_callbacks.py takes
with stand-in handles): a busy summarizer, one that does not answer in time, and one whose replica dies
mid-summary; and pages whose UI replica dies. An app of its own, made to fail: one Summarizer replica
takes one request at a time with one waiting per caller, and the UI waits 2 s for a summary, far less
than a long article takes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from bench.app import App
from retriever.local import load_serve_config
from tests.conftest import PHOTOS, ROOT, guarded_config, home_of
from tests.faults import own_app
from tests.image_server import ImageServer
from ui.examples import APOLLO_11
from ui.sessions import MOVED

# In the browser tests' group, as tests/faults/test_load_and_faults.py explains.
pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("browser_name")]

UI_SUMMARY_TIMEOUT_S = 2
# About 90,000 characters (under the 100,000 limit): seconds of work for the extractive model on 2 cores.
LONG_ARTICLE = "\n\n".join([APOLLO_11] * (90_000 // len(APOLLO_11)))
BUSY = "⚠️ **Try again shortly:** The summarizer is busy (its queue is full); try again shortly."
TIMED_OUT = f"⚠️ **Try again shortly:** The summarizer did not answer within {UI_SUMMARY_TIMEOUT_S} s; try again."
DIED = "⚠️ **Try again shortly:** The summarizer stopped during the request and is restarting; try again shortly."


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, image_server: ImageServer) -> Iterator[App]:
    config = guarded_config(load_serve_config(ROOT / "serve_config.yaml"), image_server.port)
    api, ui = config["applications"]
    summarizer = next(d for d in api["deployments"] if d["name"] == "Summarizer")
    summarizer.update(max_ongoing_requests=1, max_queued_requests=1)
    summarizer["autoscaling_config"]["max_replicas"] = 1  # busy means busy: no second replica to take over
    ui["args"]["limits"] = {**ui["args"]["limits"], "summary_timeout_s": UI_SUMMARY_TIMEOUT_S}
    with own_app(config, tmp_path_factory.mktemp("ui-messages")) as running:
        yield running


def ui_client(app: App):
    from gradio_client import Client

    return Client(app.url + "/ui/", verbose=False, download_files=False)


def summarize_in_the_ui(app: App, article: str) -> tuple[str, str]:
    """(summary, info line) as the UI's Summarize answers them, through Gradio's queue."""
    with closing(ui_client(app)) as client:
        return client.predict(article, api_name="/summarize")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def wait_until_idle(pid: int, timeout_s: float = 60) -> float:
    """Waits until the process has finished any leftover work (a summary whose caller gave up runs to its
    end in the replica's thread); returns its CPU seconds then."""
    deadline = time.monotonic() + timeout_s
    before = cpu_seconds(pid)
    while True:
        time.sleep(0.5)
        now = cpu_seconds(pid)
        if now - before < 0.05:
            return now
        assert time.monotonic() < deadline, "the replica stayed busy"
        before = now


def wait_until_ready(app: App, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while httpx.get(app.url + "/api/v1/ready", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "the app did not become ready again"
        time.sleep(0.5)


def test_a_summary_past_the_time_limit_says_so_in_the_browser(app: App, page: Page, screenshots_dir: Path):
    wait_until_ready(app)
    page.goto(app.url + "/ui/")
    page.locator("#article textarea").fill(LONG_ARTICLE)
    page.get_by_role("button", name="Summarize").click()
    info = page.locator("#summary-info")
    expect(info).to_contain_text(f"did not answer within {UI_SUMMARY_TIMEOUT_S} s", timeout=60_000)
    assert page.locator("#summary textarea").input_value() == ""
    page.screenshot(path=screenshots_dir / "summary-timed-out.png", full_page=True)


def test_summaries_past_the_summarizers_queue_are_told_it_is_busy(app: App):
    wait_until_ready(app)
    clients = [ui_client(app) for _ in range(6)]  # connected first, so that the summaries arrive together
    jobs = [client.submit(LONG_ARTICLE, api_name="/summarize") for client in clients]
    infos = [job.result(timeout=120)[1] for job in jobs]
    for client in clients:
        client.close()
    # One runs and one waits; the rest are refused at once. None is left without a message.
    assert infos.count(BUSY) >= 3, infos
    assert set(infos) <= {BUSY, TIMED_OUT}, infos


def test_summaries_past_the_summarizers_queue_answer_503_with_retry_after_in_the_api(app: App):
    wait_until_ready(app)
    api = load_serve_config(ROOT / "serve_config.yaml")["applications"][0]
    retry_after_s = next(d for d in api["deployments"] if d["name"] == "Summarizer")["backpressure_config"][
        "retry_after_s"
    ]

    async def at_once() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=app.url, timeout=120) as client:
            return await asyncio.gather(
                *(client.post("/api/v1/summarize", json={"text": LONG_ARTICLE}) for _ in range(6))
            )

    with ThreadPoolExecutor(1) as pool:  # Playwright's event loop runs in this thread
        responses = pool.submit(asyncio.run, at_once()).result()
    refused = [r for r in responses if r.status_code == 503]
    assert len(refused) >= 3 and {r.status_code for r in responses} <= {200, 503}, responses  # one runs, one waits
    for response in refused:
        assert response.headers["retry-after"] == str(retry_after_s)
        assert response.json()["detail"] == "The summarizer is busy (its queue is full); try again shortly."
        assert response.json()["request_id"] == response.headers["x-request-id"]


def test_a_summarizer_replica_that_dies_mid_summary_is_reported(app: App):
    wait_until_ready(app)
    (victim,) = app.replica_pids("Summarizer")
    idle = wait_until_idle(victim)
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(summarize_in_the_ui, app, LONG_ARTICLE)
        deadline = time.monotonic() + 30
        while cpu_seconds(victim) < idle + 0.3:  # the replica is at work on the summary
            assert time.monotonic() < deadline, "the summary never started on the replica"
            time.sleep(0.02)
        os.kill(victim, signal.SIGKILL)
        summary, info = answer.result(timeout=120)
    assert (summary, info) == ("", DIED)
    wait_until_ready(app)  # Serve replaces the replica
    assert summarize_in_the_ui(app, APOLLO_11)[0].startswith("HOUSTON")


def find(page: Page, photo: str) -> None:
    page.get_by_role("tab", name="Dog photo").click()
    page.locator("#photo input[type=file]").set_input_files(str(PHOTOS[photo]))
    expect(page.locator("#photo img")).to_be_visible(timeout=60_000)
    page.locator("#find").click()


def test_pages_on_a_ui_replica_that_dies_say_so_and_work_after_a_reload(
    app: App, browser: Browser, screenshots_dir: Path, pytestconfig: pytest.Config
):
    """Six pages over the two UI replicas, each with an answer on screen; one replica is SIGKILLed. The
    pages it held say to reload (not a spinner, not Gradio's "session not found"), and work after the
    reload; the pages on the other replica carry on as if nothing happened."""
    wait_until_ready(app)
    contexts = [browser.new_context() for _ in range(6)]
    try:
        pages = [context.new_page() for context in contexts]
        for page in pages:
            page.goto(app.url + "/ui/")
            find(page, "dog")
        for page in pages:
            expect(page.locator("#photo-verdict")).to_contain_text("A dog", timeout=60_000)
        homes = [home_of(context) for context in contexts]
        assert len(set(homes)) == 2, homes

        victim = app.replica_pids("GradioUI", "ui")[0]
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        for page in pages:  # Find again, for 3 similar photos instead of 6: a fresh answer shows
            page.locator("#matches input[type=number]").fill("3")
            page.locator("#matches input[type=number]").press("Enter")
            page.locator("#find").click()
        answered, told, told_after_s = [], [], []
        for page, home in zip(pages, homes, strict=True):
            moved, similar = page.get_by_text(MOVED), page.locator("#similar img")
            deadline = time.monotonic() + 60
            while not moved.count() and similar.count() != 3:
                assert time.monotonic() < deadline, "neither an answer nor the message"
                page.wait_for_timeout(100)
            if moved.count():
                told.append(home)
                told_after_s.append(time.monotonic() - killed_at)
            else:
                answered.append(home)
        pages[homes.index(told[0])].screenshot(path=screenshots_dir / "ui-replica-died.png", full_page=True)
        # Exactly the pages of one replica were told, and every page of the other was answered.
        assert told and answered and set(told) | set(answered) == set(homes), (told, answered)
        assert not set(told) & set(answered), (told, answered)
        assert all(home_of(contexts[i]) == home for i, home in enumerate(homes) if home in answered)

        reloaded_at = time.monotonic()
        for page, home in zip(pages, homes, strict=True):
            if home in told:
                page.reload()
                find(page, "dog")
                expect(page.locator("#photo-verdict")).to_contain_text("A dog", timeout=120_000)
        working_again_s = time.monotonic() - reloaded_at
        moved_to = {home_of(contexts[i]) for i, home in enumerate(homes) if home in told}
        assert moved_to.isdisjoint(told), moved_to  # a live replica is their home now
    finally:
        for context in contexts:
            context.close()
    figures = {
        "pages": len(pages),
        "pages_on_the_killed_replica": len(told),
        "pages_answered_by_the_other": len(answered),
        "message_shown_s_after_kill": [round(s, 2) for s in told_after_s],
        "reload_and_answer_s_for_all_told_pages": round(working_again_s, 2),
    }
    path = Path(pytestconfig.getoption("--output")) / "ui-replica-killed.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=2) + "\n")
