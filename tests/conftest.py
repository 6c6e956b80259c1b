"""Fixtures shared by every test: offline environment, loopback-only sockets, one Serve app per session."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from retriever.local import LocalServe, apply_local_env, free_port

apply_local_env()  # before ray, gradio or transformers are imported anywhere

from tests import netguard  # noqa: E402
from tests.image_server import ImageServer  # noqa: E402
from tests.photos import PHOTOS, SEED, SEED_PHOTOS  # noqa: E402, F401  (imported from here by the tests)
from tests.prometheus_server import PrometheusServer  # noqa: E402

netguard.install()

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
METRICS_INTERVAL_ENV = "RAY_metrics_report_interval_ms"

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page


@pytest.fixture(scope="session", autouse=True)
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every default store (gallery, model registry) of this run lives in a temp dir, never the user's."""
    path = tmp_path_factory.mktemp("data")
    previous = os.environ.get("RETRIEVER_DATA_DIR")
    os.environ["RETRIEVER_DATA_DIR"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("RETRIEVER_DATA_DIR", None)
    else:
        os.environ["RETRIEVER_DATA_DIR"] = previous


@pytest.fixture(scope="session")
def image_server() -> Iterator[ImageServer]:
    with ImageServer() as server:
        yield server


@pytest.fixture(scope="session")
def gallery_database(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The SQLAlchemy URL of the gallery the test app serves (a temp SQLite file)."""
    return f"sqlite:///{tmp_path_factory.mktemp('gallery') / 'gallery.db'}"


@pytest.fixture(scope="session")
def api_keys_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session app's API keys file: empty (the API open, as by default) unless a test writes keys."""
    path = tmp_path_factory.mktemp("keys") / "api-keys"
    path.write_text("")
    return path


@pytest.fixture(scope="session")
def serve_deployment(
    image_server: ImageServer, gallery_database: str, api_keys_file: Path
) -> Iterator[tuple[LocalServe, dict]]:
    """The project's own serve_config.yaml deployed on a private Ray cluster; yields it and the config.

    Changed only where a test run must differ: the stores live in a temp dir, the local image server is
    on the URL allowlist, Vision checks its registry alias every second, the API reads its keys from a
    file the tests can write, and every Ray worker refuses non-loopback connections like this process
    (on the asyncio loop, where the guard sees every connect)."""
    from backend.api.auth import KEYS_FILE_ENV
    from retriever.local import load_serve_config, start_local_serve

    config = guarded_config(load_serve_config(ROOT / "serve_config.yaml"), image_server.port)
    api = next(app for app in config["applications"] if app["name"] == "api")
    api["args"]["gallery"] = {**api["args"]["gallery"], "database_url": gallery_database}
    api["runtime_env"]["env_vars"][KEYS_FILE_ENV] = str(api_keys_file)
    config = with_vision_config(config, follow_alias_s=1.0)
    # As `retriever up`: metrics and the dashboard (which writes Prometheus' service-discovery file), on
    # free ports. Each of this app's processes reports its metrics every second, not every ten, for the
    # metrics tests: set only while its processes start, so that the tests' other clusters do not pay.
    previous = os.environ.get(METRICS_INTERVAL_ENV)
    os.environ[METRICS_INTERVAL_ENV] = "1000"
    try:
        running = start_local_serve(config, http_port=free_port(), metrics_port=free_port(), dashboard_port=free_port())
    finally:
        if previous is None:
            os.environ.pop(METRICS_INTERVAL_ENV)
        else:
            os.environ[METRICS_INTERVAL_ENV] = previous
    try:
        yield running, config
    finally:
        running.stop()


# tests/guarded_site's sitecustomize installs tests.netguard in every process started with this
# environment; the asyncio event loop, not uvloop, which resolves and connects in C, past the guard.
GUARD_ENV = {"PYTHONPATH": f"{ROOT / 'tests' / 'guarded_site'}:{ROOT}", "RAY_USE_UVLOOP": "0"}


def guarded_config(config: dict, image_server_port: int) -> dict:
    """A copy of a serve config for tests: the loopback image server on the URL allowlist, every Ray
    worker refusing non-loopback connections like this process, and no rate limit (every test client is
    one address; tests/api/test_access.py sets one)."""
    config = copy.deepcopy(config)
    for app in config["applications"]:
        app["args"]["limits"] = {**app["args"]["limits"], "url_allowlist": [f"127.0.0.1:{image_server_port}"]}
        env = app.setdefault("runtime_env", {})
        env["env_vars"] = {**env.get("env_vars", {}), **GUARD_ENV}
        if app["name"] == "ui":
            app["args"]["rate_limit"] = None
    return with_deployment_config(config, "Api", user_config={"rate_limit": None})


def wait_until_idle(page: Page, timeout_ms: float = 120_000) -> None:
    """Until no Gradio event of the page runs (every status tracker hidden, no output dimmed as pending, no
    CSS transition under way: an output fades back from pending over 0.15 s): an event started by a click
    that came earlier (a tab's select) cannot then answer over a later one's, and what is read is final."""
    page.wait_for_function(
        """() => [...document.querySelectorAll('[data-testid=status-tracker]')].every(t => t.classList.contains('hide'))
            && !document.querySelector('.pending')
            && !document.getAnimations().some(a => a instanceof CSSTransition && a.playState === 'running')""",
        timeout=timeout_ms,
    )


def home_of(context: BrowserContext) -> str:
    """The UI replica a browser context's session cookie names (ui/sessions.py)."""
    from ui.sessions import COOKIE

    return next(cookie["value"] for cookie in context.cookies() if cookie["name"] == COOKIE)


def with_deployment_config(config: dict, deployment: str, **fields: object) -> dict:
    """A copy of a serve config whose api application's `deployment` has these fields."""
    config = copy.deepcopy(config)
    api = next(app for app in config["applications"] if app["name"] == "api")
    node = next(d for d in api["deployments"] if d["name"] == deployment)
    node.update(fields)
    return config


def with_vision_config(config: dict, **changes: object) -> dict:
    """A copy of a serve config whose Vision deployment's user_config has `changes`."""
    api = next(app for app in config["applications"] if app["name"] == "api")
    vision = next(d for d in api["deployments"] if d["name"] == "Vision")
    return with_deployment_config(config, "Vision", user_config={**vision["user_config"], **changes})


@pytest.fixture(scope="session")
def prometheus(serve_deployment: tuple[LocalServe, dict]) -> Iterator[PrometheusServer]:
    """A Prometheus server scraping the session's app through Ray's service-discovery file."""
    with PrometheusServer(serve_deployment[0].prometheus_targets) as server:
        server.wait_for_targets()
        yield server


@pytest.fixture(scope="session")
def serve_app(serve_deployment: tuple[LocalServe, dict]) -> str:
    """The base URL of the session's Serve app."""
    return serve_deployment[0].url


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    """Debian's Chromium (Playwright cannot download browsers here), with nothing phoning home."""
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "args": [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ],
    }


@pytest.fixture(scope="session")
def screenshots_dir(pytestconfig: pytest.Config) -> Path:
    path = Path(pytestconfig.getoption("--output")) / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path
