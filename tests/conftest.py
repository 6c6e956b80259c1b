"""Fixtures shared by every test: offline environment, loopback-only sockets, one Serve app per session."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.local import apply_local_env

apply_local_env()  # before ray, gradio or transformers are imported anywhere

from tests import netguard  # noqa: E402

netguard.install()

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def serve_app() -> Iterator[str]:
    """The project's own serve_config.yaml deployed on a private Ray cluster; yields its base URL."""
    from backend.local import start_local_serve

    running = start_local_serve(ROOT / "serve_config.yaml", http_port=free_port())
    try:
        yield running.url
    finally:
        running.stop()


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
