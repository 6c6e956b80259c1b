"""`retriever up --share`: the run command opens the link, prints it, and the link ends with the app.

A second app on its own private Ray cluster (the session's keeps running), as a user starts it."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from retriever.cli import with_ui_settings
from retriever.local import free_port, load_serve_config
from tests.share_server import ShareServer

ROOT = Path(__file__).resolve().parents[2]
RETRIEVER = [str(Path(sys.executable).parent / "retriever")]  # the console script, as a user runs it
SHARE_SERVER_LOGIN = ("team", "pa55:word")


@pytest.fixture(scope="module")
def share_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShareServer]:
    with ShareServer(tmp_path_factory.mktemp("frps")) as server:
        yield server


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--share-server", "share.example.com"], "a share server is HOST:PORT"),
        (["--login", "ann"], "write a login as USER:PASSWORD"),
        (
            ["--share", "--share-basic-auth", ":pw"],
            "Invalid RETRIEVER_SHARE_BASIC_AUTH login: username: String should have at least 1 character",
        ),
    ],
)
def test_bad_share_options_are_refused_before_anything_starts(option: list[str], message: str) -> None:
    result = subprocess.run([*RETRIEVER, "up", *option], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert message in result.stdout
    assert "Ray" not in result.stdout + result.stderr  # refused before a cluster was started


def test_logins_travel_in_the_ui_environment_not_in_its_args() -> None:
    """Ray logs application args; the environment stays out of its logs."""
    config = load_serve_config(ROOT / "serve_config.yaml")
    shared = with_ui_settings(config, {"enabled": True, "server": "127.0.0.1:7000"}, "ann:pw-1", "team:pw-2")
    api, ui = shared["applications"]
    assert ui["args"]["share"]["enabled"] and ui["args"]["share"]["server"] == "127.0.0.1:7000"
    assert "pw-1" not in repr(ui["args"]) and "pw-2" not in repr(ui["args"])
    assert ui["runtime_env"]["env_vars"]["RETRIEVER_LOGIN"] == "ann:pw-1"
    assert ui["runtime_env"]["env_vars"]["RETRIEVER_SHARE_BASIC_AUTH"] == "team:pw-2"
    assert "RETRIEVER_LOGIN" not in api["runtime_env"]["env_vars"]  # the API asks for no login
    assert config == load_serve_config(ROOT / "serve_config.yaml")  # the loaded config is left as it was


def test_up_prints_its_metrics_and_a_share_link_that_ends_with_the_app(share_server: ShareServer, tmp_path) -> None:
    env = {
        **os.environ,
        "RETRIEVER_SHARE_BASIC_AUTH": ":".join(SHARE_SERVER_LOGIN),  # the option's env var
        "RETRIEVER_DATA_DIR": str(tmp_path),  # a first start: the packaged model is registered
    }
    metrics_port, dashboard_port = free_port(), free_port()
    # Its own session: should it fail to stop, every process it started is ended by its group id below.
    app = subprocess.Popen(
        [*RETRIEVER, "up", "--port", str(free_port()), "--share-server", share_server.address,
         "--metrics-port", str(metrics_port), "--dashboard", "--dashboard-port", str(dashboard_port)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    printed: list[str] = []
    lines = _lines_of(app, printed)
    try:
        metrics_url = _wait_for_line(lines, re.compile(r"^\s+Metrics\s+(\S+)"), timeout_s=600).split()[1]
        assert metrics_url == f"http://127.0.0.1:{metrics_port}/metrics"
        assert _wait_for_line(lines, re.compile(r"^\s+Ray\s+(\S+)"), timeout_s=5).split()[1] == (
            f"http://127.0.0.1:{dashboard_port}"
        )
        deadline = time.monotonic() + 60  # a process reports its metrics every 10 s
        while "ray_retriever_model_info" not in httpx.get(metrics_url, timeout=30).text:
            assert time.monotonic() < deadline, "no model_info gauge at the printed metrics URL"
            time.sleep(1)
        share_line = _wait_for_line(lines, re.compile(r"^\s+Share\s+(\S+)"), timeout_s=600)
        link = share_line.split()[1]
        assert re.fullmatch(rf"http://[0-9a-f]{{18}}\.localhost:{share_server.vhost_port}/ui/", link), share_line
        assert "(public while this runs)" in share_line

        assert httpx.get(link, timeout=30).status_code == 401  # the share server's login, from the env var
        config = httpx.get(link + "config", auth=SHARE_SERVER_LOGIN, timeout=30)
        assert config.status_code == 200 and config.json()["title"] == "Retriever"
    finally:
        # `kill PID`, which stops it as Ctrl-C does. (SIGINT itself may be ignored here: a test run
        # started as a background job hands that on to its children.)
        app.send_signal(signal.SIGTERM)
        try:
            code = app.wait(timeout=180)
        except subprocess.TimeoutExpired:
            os.killpg(app.pid, signal.SIGKILL)
            raise
    assert code == 0
    assert httpx.get(link, auth=SHARE_SERVER_LOGIN, timeout=30).status_code == 404  # gone with the app
    while lines.get(timeout=30) is not None:  # to the end of what it printed
        pass
    # The terminal shows its own lines: Ray's, MLflow's and the model libraries' go to logs or nowhere.
    others = re.compile(
        r"\((raylet|\w+ pid=\d+)\)|\b(INFO|DEBUG)\b|Successfully registered|Created version|Loaded pretrained"
    )
    assert [line for line in printed if others.search(line)] == []


def _lines_of(process: subprocess.Popen[str], printed: list[str]) -> queue.Queue[str | None]:
    """The process's output lines, read in a thread (which also keeps its pipe drained); each is also
    kept in `printed`."""
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            printed.append(line.rstrip("\n"))
            lines.put(printed[-1])
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    return lines


def _wait_for_line(lines: queue.Queue[str | None], pattern: re.Pattern[str], timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    seen: list[str] = []
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=remaining)
        except queue.Empty:
            break
        if line is None:
            break
        seen.append(line)
        if pattern.search(line):
            return line
    ending = "\n".join(seen[-30:])
    raise AssertionError(f"no line like {pattern.pattern!r}; the output ended with:\n{ending}")
