"""The share link of the Serve-hosted UI, end to end on loopback: the session's app is redeployed with
`share` (and `login`) in its UI args, as `retriever up --share ...` does, against a self-hosted share
server (stock frps with Gradio's naming); Chromium, gradio_client and httpx go through the link."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect
from playwright.sync_api import Error as PlaywrightError

from backend.models.text import split_sentences
from retriever.cli import with_ui_settings
from retriever.local import LocalServe, driver_handle
from tests.share_server import ShareServer, closed_port_address
from ui.examples import APOLLO_11
from ui.share import ShareStatus

pytestmark = pytest.mark.serve

TIMEOUT_MS = 120_000
LOGIN = ("ann", "moon-landing-1969")
SHARE_SERVER_LOGIN = ("team", "gate:keeper")


@pytest.fixture(scope="module")
def share_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShareServer]:
    with ShareServer(tmp_path_factory.mktemp("frps")) as server:
        yield server


class SharedUi:
    """The session's ui application, redeployed with share (and login) settings as `retriever up
    --share ...` would deploy it; the api application keeps running. Redeploys only when the settings
    differ from what runs, so tests can come in any order."""

    def __init__(self, serve_deployment: tuple[LocalServe, dict]) -> None:
        self.running, self.config = serve_deployment
        self.current: tuple | None = None
        self.status: ShareStatus | None = None

    def deploy(self, login: str | None = None, share_basic_auth: str | None = None, **share: object) -> ShareStatus:
        """The share link's status, once it is up or has failed."""
        settings = (login, share_basic_auth, sorted(share.items()))
        if settings != self.current:
            config = with_ui_settings(self.config, {"enabled": True, **share}, login, share_basic_auth)
            self.running.deploy(config)
            handle = driver_handle("GradioUI", "ui")
            # In a thread: Playwright's sync API keeps an asyncio loop in this one, where handles refuse to block.
            with ThreadPoolExecutor(1) as thread:
                self.status = thread.submit(lambda: handle.share_link.remote(wait_s=30).result()).result()
            self.current = settings
        assert self.status is not None
        return self.status

    def restore(self) -> None:
        """The session's UI again: unshared, no login."""
        if self.current is not None:
            self.running.deploy(self.config)
            self.current = None


@pytest.fixture(scope="module")
def shared_ui(serve_deployment: tuple[LocalServe, dict]) -> Iterator[SharedUi]:
    ui = SharedUi(serve_deployment)
    yield ui
    ui.restore()


@pytest.fixture
def link(shared_ui: SharedUi, share_server: ShareServer) -> str:
    """The link of a shared UI with no login."""
    status = shared_ui.deploy(server=share_server.address)
    assert status.state == "ready", status.message
    return status.url


@pytest.fixture
def protected_link(shared_ui: SharedUi, share_server: ShareServer) -> str:
    """The link of a UI with a login, shared through a share server that asks for its own."""
    status = shared_ui.deploy(
        login=":".join(LOGIN), share_basic_auth=":".join(SHARE_SERVER_LOGIN), server=share_server.address
    )
    assert status.state == "ready", status.message
    return status.url


def summarize_in(page: Page) -> str:
    page.locator("#article textarea").fill(APOLLO_11)
    page.get_by_role("button", name="Summarize").click()
    expect(page.locator("#summary-info")).to_contain_text("extractive/all-MiniLM-L6-v2", timeout=TIMEOUT_MS)
    return page.locator("#summary textarea").input_value()


def test_the_ui_shows_its_link_and_summarizes_through_it(
    link: str, page: Page, serve_app: str, screenshots_dir: Path
) -> None:
    page.goto(serve_app + "/ui/")
    line = page.locator("#share-link")
    expect(line).to_contain_text("Public link:", timeout=TIMEOUT_MS)
    assert line.get_by_role("link").get_attribute("href") == link

    page.goto(link)  # as someone on another machine would
    summary = summarize_in(page)
    assert summary == " ".join(s for s in split_sentences(APOLLO_11) if s in summary)
    assert summary.startswith("HOUSTON -- Men have landed and walked on the moon.")
    page.screenshot(path=screenshots_dir / "share-link-summary.png", full_page=True)


def test_programs_call_the_ui_through_the_link(link: str) -> None:
    from gradio_client import Client

    with closing(Client(link, verbose=False, download_files=False)) as client:
        summary, info = client.predict(APOLLO_11, api_name="/summarize")
    assert summary.startswith("HOUSTON -- Men have landed and walked on the moon.")
    assert "extractive/all-MiniLM-L6-v2" in info


def test_only_the_ui_is_shared(link: str, serve_app: str) -> None:
    origin = link.removesuffix("/ui/")
    assert httpx.get(link, timeout=30).status_code == 200
    for api_route in ("/api/v1/ready", "/docs", "/Summarizer?txt=Hello.+World."):
        assert httpx.get(origin + api_route, timeout=30).status_code == 404, api_route
        assert httpx.get(serve_app + api_route, timeout=30).status_code == 200, api_route  # still served locally


def test_the_link_ends_with_the_ui_that_opened_it(link: str, shared_ui: SharedUi) -> None:
    assert httpx.get(link, timeout=30).status_code == 200
    shared_ui.restore()  # the UI replica is replaced by one without a link
    assert httpx.get(link, timeout=30).status_code == 404


# A login on the UI (Gradio's auth on the mount) and one at the share server (basic auth).


def test_the_share_server_rejects_requests_without_its_login(protected_link: str) -> None:
    assert httpx.get(protected_link, timeout=30).status_code == 401
    assert httpx.get(protected_link, auth=(SHARE_SERVER_LOGIN[0], "wrong"), timeout=30).status_code == 401
    admitted = httpx.get(protected_link + "config", auth=SHARE_SERVER_LOGIN, timeout=30)
    assert admitted.status_code == 401  # past the share server, the UI asks for its own login


def test_programs_log_in_to_both(protected_link: str) -> None:
    from gradio_client import Client
    from gradio_client.exceptions import AuthenticationError

    # The share server's login on every request: as a header, and as httpx auth for the login
    # request, which gradio_client sends without its headers.
    basic = "Basic " + base64.b64encode(":".join(SHARE_SERVER_LOGIN).encode()).decode()
    share_login = {"headers": {"Authorization": basic}, "httpx_kwargs": {"auth": SHARE_SERVER_LOGIN}}
    with closing(Client(protected_link, auth=LOGIN, verbose=False, download_files=False, **share_login)) as client:
        summary, _ = client.predict(APOLLO_11, api_name="/summarize")
    assert summary.startswith("HOUSTON -- Men have landed and walked on the moon.")
    with pytest.raises(ValueError, match="Could not login"):  # a wrong UI password: Gradio's 400
        Client(protected_link, auth=(LOGIN[0], "wrong"), verbose=False, **share_login)
    with pytest.raises(AuthenticationError):  # no share-server login: its 401
        Client(protected_link, auth=LOGIN, verbose=False)


def test_a_browser_logs_in_and_uses_the_ui(protected_link: str, browser: Browser, screenshots_dir: Path) -> None:
    stranger = browser.new_context().new_page()
    with pytest.raises(PlaywrightError, match="ERR_INVALID_AUTH_CREDENTIALS"):  # the share server's 401
        stranger.goto(protected_link)
    stranger.context.close()

    context = browser.new_context(
        http_credentials={"username": SHARE_SERVER_LOGIN[0], "password": SHARE_SERVER_LOGIN[1]}
    )
    page = context.new_page()
    page.goto(protected_link)
    page.get_by_label("username").fill(LOGIN[0])
    page.get_by_label("password").fill("wrong")
    page.get_by_role("button", name="Login").click()
    expect(page.get_by_text("Incorrect Credentials")).to_be_visible(timeout=TIMEOUT_MS)
    page.get_by_label("username").fill(LOGIN[0])  # Gradio's form forgets it after a failed login
    page.get_by_label("password").fill(LOGIN[1])
    page.get_by_role("button", name="Login").click()
    expect(page.locator("#share-link")).to_contain_text(protected_link, timeout=TIMEOUT_MS)
    assert summarize_in(page).startswith("HOUSTON -- Men have landed and walked on the moon.")
    page.screenshot(path=screenshots_dir / "share-link-after-login.png", full_page=True)
    context.close()


def test_without_a_share_server_the_ui_says_why_and_keeps_working(
    shared_ui: SharedUi, page: Page, serve_app: str, screenshots_dir: Path
) -> None:
    address = closed_port_address()
    status = shared_ui.deploy(server=address)
    assert status.state == "failed"
    page.goto(serve_app + "/ui/")
    line = page.locator("#share-link")
    expect(line).to_contain_text(
        f"No share link: the share server at {address} refused the connection", timeout=TIMEOUT_MS
    )
    page.screenshot(path=screenshots_dir / "share-link-unavailable.png")
    assert summarize_in(page).startswith("HOUSTON -- Men have landed and walked on the moon.")
