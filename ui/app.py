"""The UI deployment: a Gradio app mounted on FastAPI, holding handles to the backend deployments.

It stays at one replica: Gradio's queue joins on one request and streams results on another, and both
must reach the same process.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from typing import Any
from pathlib import Path

import gradio as gr
from fastapi import FastAPI
from ray import serve

from shared.backends import SERVE_UNAVAILABLE, BackendUnavailable, call, explain
from shared.config import Limits
from shared.images import InvalidImage
from shared.photos import PhotoService
from shared.schemas import InvalidArticle, SummarizeOptions, error_message, validate_article
from ui.blocks import CSS, build_blocks
from ui.examples import ARTICLES
from ui.share import (
    LOGIN_ENV,
    SHARE_BASIC_AUTH_ENV,
    Credentials,
    ShareLink,
    ShareSettings,
    ShareStatus,
    credentials_from_env,
)

logger = logging.getLogger("ray.serve")


class Callbacks:
    """The UI's behaviour: plain async callbacks over deployment handles."""

    def __init__(self, summarizer, limits: Limits) -> None:
        self.summarizer = summarizer
        self.limits = limits

    async def summarize(self, article: str) -> AsyncIterator[tuple[str, str]]:
        """Yields (summary so far, info line). Failures end with an empty summary and the reason in
        the info line: a user reads what went wrong instead of watching a spinner."""
        try:
            validate_article(article or "", self.limits)
        except InvalidArticle as exc:
            yield "", problem("Cannot summarize", str(exc))
            return
        started = time.perf_counter()
        summary = ""
        try:
            async with asyncio.timeout(self.limits.summary_timeout_s):
                status = asyncio.ensure_future(self.summarizer.status.remote())
                stream = self.summarizer.options(stream=True).stream.remote(article, SummarizeOptions())
                async for piece in stream:
                    summary += piece
                    yield summary, "Summarizing…"
                model = (await status).model
        except InvalidArticle as exc:  # the model found nothing to summarize
            yield "", problem("Cannot summarize", error_message(exc))
        except TimeoutError:
            yield "", problem(
                "Summarizer busy", f"no answer within {self.limits.summary_timeout_s:.0f} s; try again."
            )
        except SERVE_UNAVAILABLE as exc:  # busy, or its replica died mid-stream (a stream is not retried)
            yield "", problem("Summarizer unavailable", str(explain(exc, "Summarizer")))
        except Exception:
            logger.exception("summarize failed")
            yield "", problem("Summarizer unavailable", "try again in a moment.")
        else:
            yield summary, f"{model} · {time.perf_counter() - started:.2f} s"


class PhotoCallbacks:
    """The Dog photo tab: plain async callbacks over the photo service (which calls the handles)."""

    def __init__(self, photos: PhotoService, gallery) -> None:
        self.photos = photos
        self.gallery = gallery
        # Gallery photos as JPEG files, each written once (a stored photo never changes): Gradio serves
        # files as they are, where PIL images would be re-encoded (WebP) in every answer.
        self.thumbnail_dir = Path(tempfile.mkdtemp(prefix="retriever-ui-thumbnails-"))

    async def _thumbnail_files(self, photo_ids: list[int]) -> list[Path | None]:
        paths = [self.thumbnail_dir / f"{photo_id}.jpg" for photo_id in photo_ids]
        missing = [(photo_id, path) for photo_id, path in zip(photo_ids, paths) if not path.exists()]
        if missing:
            thumbnails = await call(self.gallery.thumbnails, [photo_id for photo_id, _ in missing])
            await asyncio.to_thread(self._write_thumbnails, [path for _, path in missing], thumbnails)
        return [path if path.exists() else None for path in paths]

    @staticmethod
    def _write_thumbnails(paths: list[Path], thumbnails: list[bytes | None]) -> None:
        for path, data in zip(paths, thumbnails):
            if data:
                partial = path.with_suffix(".part")
                partial.write_bytes(data)
                partial.replace(path)  # a concurrent answer never sees half a file

    async def _photo_bytes(self, photo: str | None, url: str) -> bytes:
        if photo:
            return await asyncio.to_thread(Path(photo).read_bytes)
        if url and url.strip():
            return await self.photos.fetch(url.strip())
        raise InvalidImage("Upload a photo or give an image URL first.")

    async def find(self, photo: str | None, url: str, matches: int) -> tuple[str, Any, list]:
        """(verdict, breed label, similar photos); the breed label is hidden when it is not a dog."""
        try:
            result = await self.photos.predict(await self._photo_bytes(photo, url), k=4, n=int(matches))
            async with asyncio.timeout(self.photos.limits.photo_timeout_s):
                thumbnails = await self._thumbnail_files([m.id for m in result.top_matches])
        except Exception as exc:
            return photo_problem(exc), gr.update(value=None, visible=False), []
        similar = [
            (str(path), f"{m.label or 'unlabelled'} · similarity {m.similarity:.2f}")
            for m, path in zip(result.top_matches, thumbnails)
            if path
        ]
        answered_by = f"\n\nAnswered by `{result.model}`."  # which registered version, across live swaps
        if not result.is_dog:
            verdict = (
                f"**Not a dog**: this looks like a {result.best_guess} "
                f"(dog score {result.dog_score:.2f}). The closest photos in the gallery are below."
            )
            return verdict + answered_by, gr.update(value=None, visible=False), similar
        breed, p = next(iter(result.probabilities.items()))
        verdict = f"**A dog** (dog score {result.dog_score:.2f}), most likely a **{breed}** ({p:.0%})."
        return verdict + answered_by, gr.update(value=dict(list(result.probabilities.items())[:5]), visible=True), similar

    async def add(self, photo: str | None, url: str, label: str) -> str:
        try:
            source = f"url:{url.strip()}" if not photo and url else "upload:ui"
            item = await self.photos.add(await self._photo_bytes(photo, url), label, source)
        except Exception as exc:
            return photo_problem(exc)
        what = f"{item.label} ({item.label_source})" if item.label else "no label"
        return f"Added to the gallery as photo #{item.id}, {what}."


def photo_problem(exc: Exception) -> str:
    if isinstance(exc, InvalidImage):
        return problem("Cannot use this photo", error_message(exc))
    if isinstance(exc, BackendUnavailable):
        return problem("Try again shortly", str(exc))
    if isinstance(exc, TimeoutError):
        return problem("Vision model busy", "no answer in time; try again.")
    logger.exception("photo callback failed")
    return problem("Vision model unavailable", "try again in a moment.")


def problem(title: str, message: str) -> str:
    return f"⚠️ **{title}:** {message}"


@serve.deployment(name="GradioUI", num_replicas=1, ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=100)
@serve.ingress()
class GradioUI:
    def __init__(
        self,
        backend_app: str,
        backends: dict[str, str],
        limits: Limits,
        concurrency_limit: int,
        max_queue_size: int,
        share: ShareSettings,
        login: Credentials | None,
    ) -> None:
        """`backends`: the deployment names of the summarizer, vision and gallery in `backend_app`;
        `share`: whether (and how) to open a public link to this UI; `login`: asked before the UI shows.
        Logins not given here come from $RETRIEVER_LOGIN and $RETRIEVER_SHARE_BASIC_AUTH."""

        # The model deployments live in another application of the same config, which may still be
        # starting when this replica is: take handles without waiting for them to be registered.
        def handle(role: str):
            return serve.get_deployment_handle(backends[role], app_name=backend_app, _check_exists=False)

        self.callbacks = Callbacks(handle("summarizer"), limits)
        gallery = handle("gallery")
        self.photo_callbacks = PhotoCallbacks(PhotoService(handle("vision"), gallery, limits), gallery)
        self.concurrency_limit = concurrency_limit
        self.max_queue_size = max_queue_size
        self.max_file_size = limits.max_image_bytes  # uploads over the API's cap stop at Gradio's door
        self.login = login or credentials_from_env(LOGIN_ENV)
        if share.basic_auth is None and (basic_auth := credentials_from_env(SHARE_BASIC_AUTH_ENV)):
            share = share.model_copy(update={"basic_auth": basic_auth})
        self.share_timeout_s = share.timeout_s
        # The link is this replica's: it opens with it and closes with it (frpc also dies if the
        # replica's process is killed).
        self.share: ShareLink | None = None
        if share.enabled:
            port, route_prefix = serve_proxy_route()
            self.share = ShareLink(share, local_port=port, path=route_prefix).start()

    def __serve_build_asgi_app__(self) -> FastAPI:
        blocks = build_blocks(
            self.callbacks.summarize, self.photo_callbacks, ARTICLES, self.share_line if self.share else None
        )
        # Gradio's default concurrency of 1 would serialise every user behind one summary.
        blocks.queue(default_concurrency_limit=self.concurrency_limit, max_size=self.max_queue_size)
        return gr.mount_gradio_app(
            FastAPI(),
            blocks,
            path="/",
            css=CSS,
            ssr_mode=False,
            max_file_size=self.max_file_size,
            # Behind a share link every request comes from 127.0.0.1: the login is asked of everyone.
            auth=self.login.pair() if self.login else None,
            auth_message="Log in to use Retriever." if self.login else None,
        )

    async def share_link(self, wait_s: float = 0) -> ShareStatus:
        """The share link's status, after waiting up to `wait_s` for it to come up or fail."""
        if self.share is None:
            return ShareStatus("off")
        return await asyncio.to_thread(self.share.wait, wait_s)

    async def share_line(self) -> str:
        """The line at the top of the UI: the link, or why there is none."""
        status = await self.share_link(wait_s=self.share_timeout_s + 1)
        if status.state == "ready":
            return f"**Public link:** [{status.url}]({status.url}) · anyone with it can use this app while it runs."
        if status.state == "failed":
            return problem("No share link", status.message or "unknown reason")
        return "Creating the share link… reload the page in a moment."

    def __del__(self) -> None:  # Serve calls it when it stops the replica
        if getattr(self, "share", None) is not None:
            self.share.close()
        if getattr(self, "photo_callbacks", None) is not None:
            shutil.rmtree(self.photo_callbacks.thumbnail_dir, ignore_errors=True)


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
