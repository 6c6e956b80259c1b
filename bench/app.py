"""The app under test, started the way a user starts it: `retriever up` in a process of its own, on a
loopback port, with a data dir of its own; stopped by PID (SIGTERM, as `kill PID` does)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.stats import ProcessSample, pss_mib, sample_processes, tree_pids
from retriever.local import free_port

ROOT = Path(__file__).resolve().parent.parent
RETRIEVER = ROOT / ".venv" / "bin" / "retriever"
READY_PATHS = ("/api/v1/ready", "/ui/")  # every model deployment answers; the UI page loads


def bench_config(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """serve_config.yaml as the benchmarks run it: the embedded defaults, plus the loopback photo server
    admitted for the URL routes, without the per-caller rate limit (one load generator is every client
    here: the benchmarks measure serving, not the limit), plus `overrides`
    ({"api.Vision.user_config.torch_threads": 1, ...}: application.deployment.field..., or
    application.args.field...)."""
    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    apps = {app["name"]: app for app in config["applications"]}
    apps["api"]["args"]["limits"]["url_allowlist"] = ["127.0.0.1/32"]  # the anchor: the ui app's too
    next(d for d in apps["api"]["deployments"] if d["name"] == "Api")["user_config"]["rate_limit"] = None
    apps["ui"]["args"]["rate_limit"] = None
    for key, value in (overrides or {}).items():
        app_name, part, *path = key.split(".")
        if part == "args":
            node = apps[app_name]["args"]
        else:
            node = next(d for d in apps[app_name]["deployments"] if d["name"] == part)
        for step in path[:-1]:
            node = node.setdefault(step, {})
        node[path[-1]] = value
    return config


def user_config(config: dict[str, Any], app_name: str, deployment: str) -> dict[str, Any]:
    """One deployment's user_config in a Serve config (empty when it has none)."""
    app = next(a for a in config["applications"] if a["name"] == app_name)
    return next((d.get("user_config") or {} for d in app["deployments"] if d["name"] == deployment), {})


class App:
    """One `retriever up` process. `start()` returns the cold start: command to every READY_PATH 200."""

    def __init__(
        self, config: dict[str, Any], port: int, data_dir: Path, workdir: Path, env: dict[str, str] | None = None
    ):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        # Never the fixed defaults: another app (a user's, another test's) may hold them.
        self.metrics_port, self.dashboard_port = free_port(), free_port()
        self.data_dir = data_dir
        self.config_path = workdir / f"serve_config.{port}.yaml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.log_path = workdir / f"retriever-up.{port}.log"
        self.env = {**os.environ, "RETRIEVER_DATA_DIR": str(data_dir), **(env or {})}
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 600) -> float:
        started = time.perf_counter()
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    *(str(RETRIEVER), "up", "--config", str(self.config_path), "--port", str(self.port)),
                    *("--metrics-port", str(self.metrics_port), "--dashboard-port", str(self.dashboard_port)),
                ],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        waiting = list(READY_PATHS)
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while waiting:
                if self.process.poll() is not None:
                    raise RuntimeError(f"retriever up exited with {self.process.returncode}; see {self.log_path}")
                if time.perf_counter() - started > timeout_s:
                    self.stop()
                    raise TimeoutError(f"the app was not ready within {timeout_s:.0f} s; see {self.log_path}")
                try:
                    if client.get(waiting[0]).status_code == 200:
                        waiting.pop(0)
                        continue
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        return time.perf_counter() - started

    def replica_pids(self, deployment: str, app_name: str = "api") -> list[int]:
        """The processes of a deployment's replicas (Ray titles them ray::ServeReplica:APP:NAME, followed
        by .METHOD while one runs)."""
        title = f"ray::ServeReplica:{app_name}:{deployment}"
        pids = []
        for pid in tree_pids(self.process.pid):
            try:
                running = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
                if running == title or running.startswith(title + "."):
                    pids.append(pid)
            except OSError:
                continue
        return pids

    def memory_mib(self) -> float:
        """The whole app: `retriever up`, its Ray cluster and every replica (PSS, shared pages once)."""
        return pss_mib(tree_pids(self.process.pid))

    def processes(self) -> list[ProcessSample]:
        """Every process of the app now: its role, CPU time so far, PSS, and whether it holds torch."""
        return sample_processes(tree_pids(self.process.pid))

    def stop(self) -> float:
        """SIGTERM, as `kill PID`; every process of the app is killed if it has not ended in 120 s."""
        if self.process is None or self.process.poll() is not None:
            return 0.0
        started = time.perf_counter()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            for pid in tree_pids(self.process.pid):  # replicas have process groups of their own
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.process.wait()
        return time.perf_counter() - started
