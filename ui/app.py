"""The UI deployment: a Gradio app mounted on FastAPI, holding handles to the backend deployments.

It runs on as many replicas as the config asks: each browser session stays on one of them (ui/sessions.py).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any

import gradio as gr
from fastapi import FastAPI
from ray import serve
from ray.serve.config import RequestRouterConfig

from backend import telemetry
from backend.client import ModelClient
from shared.config import Limits
from shared.rate_limit import RateLimit
from ui.blocks import CSS, THEME, build_blocks
from ui.callbacks import Callbacks, warning
from ui.examples import ARTICLES
from ui.queue import quieten
from ui.sessions import HomeReplicaRouter, SessionCookie
from ui.share import (
    LOGIN_ENV,
    SHARE_BASIC_AUTH_ENV,
    Credentials,
    ShareLink,
    ShareSettings,
    ShareStatus,
    credentials_from_env,
)


@serve.deployment(
    name="GradioUI",
    num_replicas=1,
    ray_actor_options={"num_cpus": 0.1},
    max_ongoing_requests=1000,  # every open page holds one (Gradio's heartbeat): serve_config.yaml
    # Every request of a browser session to the replica that holds it.
    request_router_config=RequestRouterConfig(request_router_class=HomeReplicaRouter),
)
@serve.ingress()
class GradioUI:
    def __init__(
        self,
        backend_app: str,
        backends: dict[str, str],
        limits: Limits,
        concurrency_limit: int,
        max_queue_size: int,
        login: Credentials | None,
        rate_limit: RateLimit | None = None,
        share_tunnel: Any = None,
        share_timeout_s: float = 0,
    ) -> None:
        """`backends`: the deployment names of the summarizer, vision and gallery in `backend_app`;
        `login`: asked before the UI shows (if None, from $RETRIEVER_LOGIN); `rate_limit`: per login (or
        browser address) on the actions that run a model; `share_tunnel`: a handle to the ShareTunnel
        when the UI is shared, whose link is up or given up within `share_timeout_s`."""

        # The model deployments live in another application of the same config, which may still be
        # starting when this replica is: take handles without waiting for them to be registered.
        def handle(role: str):
            return serve.get_deployment_handle(backends[role], app_name=backend_app, _check_exists=False)

        models = ModelClient(handle("summarizer"), handle("vision"), handle("gallery"), limits)
        self.thumbnail_dir = Path(tempfile.mkdtemp(prefix="retriever-ui-thumbnails-"))
        self.callbacks = Callbacks(models, self.thumbnail_dir, rate_limit)
        self.concurrency_limit = concurrency_limit
        self.max_queue_size = max_queue_size
        self.max_file_size = limits.max_image_bytes  # uploads over the API's cap stop at Gradio's door
        self.login = login or credentials_from_env(LOGIN_ENV)
        self.share = share_tunnel
        self.share_timeout_s = share_timeout_s
        if share_tunnel is None:
            telemetry.hold(telemetry.share_link_up(), 0)  # said, not left absent: no link is shared

    def __serve_build_asgi_app__(self) -> FastAPI:
        blocks = build_blocks(self.callbacks, ARTICLES, self.share_line if self.share else None)
        # Gradio's default concurrency of 1 would serialise every user behind one summary.
        blocks.queue(default_concurrency_limit=self.concurrency_limit, max_size=self.max_queue_size)
        quieten(blocks)  # no 1 ms polling while nobody uses the UI
        app = gr.mount_gradio_app(
            FastAPI(),
            blocks,
            path="/",
            css=CSS,
            theme=THEME,
            ssr_mode=False,
            max_file_size=self.max_file_size,
            # Behind a share link every request comes from 127.0.0.1: the login is asked of everyone.
            auth=self.login.pair() if self.login else None,
            auth_message="Log in to use Retriever." if self.login else None,
        )
        app.add_middleware(SessionCookie, replica=serve.get_replica_context().replica_id.unique_id)
        return app

    async def share_link(self, wait_s: float = 0) -> ShareStatus:
        """The share link's status, after waiting up to `wait_s` for it to come up or fail."""
        if self.share is None:
            return ShareStatus("off")
        return await self.share.status.remote(wait_s)

    async def share_line(self) -> str:
        """The line at the top of the UI: the link, or why there is none."""
        status = await self.share_link(wait_s=self.share_timeout_s + 1)
        if status.state == "ready":
            return f"**Public link:** [{status.url}]({status.url}) · anyone with it can use this app while it runs."
        if status.state == "failed":
            return warning("No share link", status.message or "unknown reason")
        return "Creating the share link… reload the page in a moment."

    def __del__(self) -> None:  # Serve calls it when it stops the replica
        if getattr(self, "thumbnail_dir", None) is not None:
            shutil.rmtree(self.thumbnail_dir, ignore_errors=True)


@serve.deployment(name="ShareTunnel", num_replicas=1, ray_actor_options={"num_cpus": 0})
class ShareTunnel:
    """The UI's public link, one for all UI replicas (it points at the Serve proxy, which spreads
    sessions over them). It opens with this replica and closes with it; frpc also dies if the
    replica's process is killed."""

    def __init__(self, settings: ShareSettings) -> None:
        """Its basic auth, if not given here, comes from $RETRIEVER_SHARE_BASIC_AUTH."""
        if settings.basic_auth is None and (basic_auth := credentials_from_env(SHARE_BASIC_AUTH_ENV)):
            settings = settings.model_copy(update={"basic_auth": basic_auth})
        telemetry.hold(telemetry.share_link_up(), 0)
        port, route_prefix = serve_proxy_route()
        self.link = ShareLink(settings, port, route_prefix, on_status=record_share_status).start()

    async def status(self, wait_s: float = 0) -> ShareStatus:
        """The link's status, after waiting up to `wait_s` for it to come up or fail."""
        return await asyncio.to_thread(self.link.wait, wait_s)

    def __del__(self) -> None:  # Serve calls it when it stops the replica
        if getattr(self, "link", None) is not None:
            self.link.close()


def record_share_status(status: ShareStatus) -> None:
    telemetry.hold(telemetry.share_link_up(), 1 if status.state == "ready" else 0)


def serve_proxy_route() -> tuple[int, str]:
    """(port of the Serve HTTP proxy, route prefix of this replica's application): where the UI is
    reachable on this node, so the tunnel can point at it."""
    import ray
    from ray.serve.context import _get_global_client

    # Ray has no public API for either from inside a replica; the controller's details are what
    # `serve status` and the dashboard read.
    details = ray.get(_get_global_client()._controller.get_serve_instance_details.remote())
    app_name = serve.get_replica_context().app_name
    return int(details["http_options"]["port"]), details["applications"][app_name]["route_prefix"] or "/"
