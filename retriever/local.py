"""Run the Serve config on a private Ray cluster on this machine (the embedded mode, and the tests).

This mirrors what `serve run serve_config.yaml` does, except that it never joins a Ray cluster that
happens to be running already (`address="local"`), keeps the cluster on 127.0.0.1, gives it its own
temp dir and random ports, and can override the HTTP port.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)

# Read by Ray, Gradio and Hugging Face libraries when they are imported or start processes:
# nothing may phone home or reach for a model hub.
LOCAL_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    # Every Ray port asks for the cluster's token (~/.ray/auth_token, made on first start). Ray does this
    # by itself for a new local cluster, with a warning on the user's screen; said here, it is quiet.
    # Serve's replicas listen on all interfaces: the token is what keeps strangers out.
    "RAY_AUTH_MODE": "token",
    # Keeps a one-machine cluster on 127.0.0.1 instead of the host's network address.
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    # Ray Serve's low-overhead request path (docs/benchmarks.md: 19 -> 24-27 photos/s on 2 cores, about
    # 20 CPU-ms less per request): handle calls and proxy-to-replica over gRPC, user code and routers
    # on the replica's own event loop, request logs written in blocks (errors at once). Not its direct
    # ingress, which starts no proxy and has each application listen on port 8000 itself: the api and
    # ui applications share one port through the proxy.
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0",
    # ...but each log line written when it happens (the optimized path holds 1,000 in memory): a user's
    # request id is in the logs at once, and a replica that dies takes none of its last lines with it.
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1",
    # The proxy replaces a client's X-Request-ID that is not sane, and hands a browser's session cookie
    # to the UI's request router (retriever/proxy.py).
    "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": "retriever.proxy:middlewares",
}

# Where `retriever up` serves Prometheus metrics and the Ray dashboard (both on 127.0.0.1).
METRICS_PORT = 8080
DASHBOARD_PORT = 8265


def apply_local_env() -> None:
    """Set LOCAL_ENV defaults in this process; call before importing ray."""
    for key, value in LOCAL_ENV.items():
        os.environ.setdefault(key, value)


def load_serve_config(path: str | Path) -> dict[str, Any]:
    return yaml.safe_load(Path(path).read_text())


@dataclass
class LocalServe:
    """A running private Ray cluster with the config's applications deployed."""

    host: str
    port: int
    temp_dir: Path
    metrics_port: int | None = None
    dashboard_port: int | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def metrics_url(self) -> str | None:
        return f"http://127.0.0.1:{self.metrics_port}/metrics" if self.metrics_port else None

    @property
    def dashboard_url(self) -> str | None:
        return f"http://127.0.0.1:{self.dashboard_port}" if self.dashboard_port else None

    @property
    def prometheus_targets(self) -> Path:
        """Ray's Prometheus service-discovery file (written by the dashboard): every metrics endpoint of
        the cluster, for Prometheus' file_sd_configs."""
        return self.temp_dir / "prom_metrics_service_discovery.json"

    def deploy(self, config: dict[str, Any], timeout_s: float = 300) -> None:
        """Apply a changed config to the running cluster, as `serve deploy` does: what changed in a
        deployment's user_config reaches its replicas' `reconfigure` without restarting them."""
        from ray.serve.context import _get_global_client
        from ray.serve.schema import ServeDeploySchema

        schema = ServeDeploySchema.model_validate(
            {**config, "http_options": {**config.get("http_options", {}), "port": self.port}}
        )
        _get_global_client().deploy_apps(schema, _blocking=False)
        wait_until_running([app.name for app in schema.applications], timeout_s)

    def stop(self) -> None:
        import ray
        from ray import serve

        # Ray's driver prints the errors its processes report straight to stdout, log_to_driver or not;
        # replicas killed on purpose at shutdown report some ("graceful_shutdown failed"): to the log.
        with contextlib.redirect_stdout(io.StringIO()) as reported:
            try:
                serve.shutdown()
            finally:
                ray.shutdown()
                shutil.rmtree(self.temp_dir, ignore_errors=True)
        for line in reported.getvalue().splitlines():
            logger.debug("ray at shutdown: %s", line)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def start_private_ray(
    num_cpus: int | None = None,
    *,
    state_api: bool = False,
    metrics_port: int | None = None,
    dashboard_port: int | None = None,
    **init_options: Any,
) -> Path:
    """ray.init a new single-machine cluster of our own (never one already running) on 127.0.0.1, in
    its own temp dir; returns the dir, to remove after ray.shutdown().

    `state_api`: also start the dashboard, which serves Ray's State API (Ray Train watches its controller
    through it), and tell every process of this cluster where it is: left to find it alone, a process
    fails when another Ray cluster runs on the machine (a `retriever up` beside a `retriever train`).
    `metrics_port`: where this node serves Prometheus metrics (None: a random port); `dashboard_port`:
    start Ray's dashboard there (it also writes the Prometheus service-discovery file)."""
    apply_local_env()
    import ray

    # Short path: Ray's socket paths must stay under the OS limit.
    temp_dir = Path(tempfile.mkdtemp(prefix="retriever-ray-", dir="/tmp"))
    options = {"include_dashboard": False, "logging_level": "WARNING", **init_options}
    if metrics_port is not None:
        options["_metrics_export_port"] = metrics_port
    if state_api or dashboard_port is not None:
        port = dashboard_port or free_port()
        os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"  # inherited by the cluster's processes
        options.update(include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=port)
    ray.init(address="local", num_cpus=num_cpus, _temp_dir=str(temp_dir), **options)
    return temp_dir


def start_local_serve(
    config: str | Path | dict[str, Any] = "serve_config.yaml",
    *,
    http_port: int | None = None,
    metrics_port: int | None = None,
    dashboard_port: int | None = None,
    num_cpus: int | None = None,
    timeout_s: float = 900,
    on_status: Callable[[dict[str, str]], None] | None = None,
    log_to_driver: bool = True,
) -> LocalServe:
    """Start Ray on this machine, deploy every application of the config (a file, or its loaded and
    edited dict), and wait until all run. `metrics_port`, `dashboard_port`: as start_private_ray.
    `log_to_driver=False`: Ray's processes log only to their files, not to this process's terminal."""
    apply_local_env()
    from ray.serve._private import api as serve_private_api
    from ray.serve.config import gRPCOptions
    from ray.serve.schema import ServeDeploySchema

    if not isinstance(config, dict):
        config = load_serve_config(config)
    if http_port is not None:
        config = {**config, "http_options": {**config.get("http_options", {}), "port": http_port}}
    set_proxy_deadline(config)
    config = ServeDeploySchema.model_validate(config)
    temp_dir = start_private_ray(
        num_cpus=num_cpus,
        metrics_port=metrics_port,
        dashboard_port=dashboard_port,
        namespace="serve",
        log_to_driver=log_to_driver,
    )
    running = LocalServe(config.http_options.host, config.http_options.port, temp_dir, metrics_port, dashboard_port)
    try:
        client = serve_private_api.serve_start(
            http_options=config.http_options.model_dump(),
            proxy_location=config.proxy_location,
            grpc_options=gRPCOptions(**config.grpc_options.model_dump()),
            controller_options=config.controller_options,
        )
        client.deploy_apps(config, _blocking=False)
        deadline = time.monotonic() + timeout_s
        wait_until_running([app.name for app in config.applications], timeout_s, on_status)
        wait_until_ready(running.url + READY_PATH, deadline - time.monotonic())
    except BaseException:
        running.stop()
        raise
    return running


def set_proxy_deadline(config: dict[str, Any]) -> None:
    """The proxy's front door (backend/api/deadline.py) takes the api application's admit_within_s, through
    the environment the cluster's processes inherit: the proxy sees no application's args."""
    from backend.api.deadline import DEADLINE_ENV

    os.environ.pop(DEADLINE_ENV, None)
    for app in config.get("applications", []):
        limits = (app.get("args") or {}).get("limits") or {}
        if app.get("import_path") == API_BUILDER and "admit_within_s" in limits:
            value = limits["admit_within_s"]
            os.environ[DEADLINE_ENV] = "off" if value is None else str(float(value))


API_BUILDER = "retriever.graph:build_api"  # the api application's builder, as serve_config.yaml names it
READY_PATH = "/api/v1/ready"  # the API's readiness route: every model deployment answers


def driver_handle(deployment: str, app_name: str) -> Any:
    """A handle for blocking calls (`.remote(...).result()`) from a driver's plain code. With
    RAY_SERVE_THROUGHPUT_OPTIMIZED (LOCAL_ENV) handles route on the caller's event loop, which
    synchronous code has none of: this one keeps Serve's router loop of its own."""
    from ray import serve

    handle = serve.get_deployment_handle(deployment, app_name=app_name)
    if not handle.is_initialized:  # Serve hands out one cached handle per deployment
        handle._init(_run_router_in_separate_loop=True)
    return handle


def wait_until_ready(url: str, timeout_s: float) -> None:
    """Running is not ready: the gallery may still be adding its first photos."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(url, timeout=10).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer 200 within {timeout_s:.0f} s")
        time.sleep(0.5)


def wait_until_running(
    app_names: list[str], timeout_s: float, on_status: Callable[[dict[str, str]], None] | None = None
) -> None:
    from ray import serve

    deadline = time.monotonic() + timeout_s
    last: dict[str, str] = {}
    while True:
        apps = serve.status().applications
        states = {name: apps[name].status.value if name in apps else "NOT_STARTED" for name in app_names}
        if states != last and on_status:
            on_status(states)
        last = states
        failed = {name: apps[name].message for name in app_names if states[name] == "DEPLOY_FAILED"}
        if failed:
            raise RuntimeError(
                "; ".join(f"application {name!r} failed to deploy: {msg}" for name, msg in failed.items())
            )
        if all(state == "RUNNING" for state in states.values()):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"applications not running after {timeout_s:.0f} s: {states}")
        time.sleep(0.5)
