"""The UI deployment: a Gradio app mounted on FastAPI, holding handles to the backend deployments.

It stays at one replica: Gradio's queue joins on one request and streams results on another, and both
must reach the same process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import gradio as gr
from fastapi import FastAPI
from ray import serve

from shared.config import Limits
from shared.schemas import InvalidArticle, SummarizeOptions, error_message, validate_article
from ui.blocks import CSS, build_blocks
from ui.examples import ARTICLES

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
            async with asyncio.timeout(self.limits.request_timeout_s):
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
                "Summarizer busy", f"no answer within {self.limits.request_timeout_s:.0f} s; try again."
            )
        except Exception:
            logger.exception("summarize failed")
            yield "", problem("Summarizer unavailable", "try again in a moment.")
        else:
            yield summary, f"{model} · {time.perf_counter() - started:.2f} s"


def problem(title: str, message: str) -> str:
    return f"⚠️ **{title}:** {message}"


@serve.deployment(name="GradioUI", num_replicas=1, ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=100)
@serve.ingress()
class GradioUI:
    def __init__(self, backend_app: str, limits: Limits, concurrency_limit: int) -> None:
        # The model deployments live in another application of the same config, which may still be
        # starting when this replica is: take handles without waiting for them to be registered.
        summarizer = serve.get_deployment_handle("Summarizer", app_name=backend_app, _check_exists=False)
        self.callbacks = Callbacks(summarizer, limits)
        self.concurrency_limit = concurrency_limit

    def __serve_build_asgi_app__(self) -> FastAPI:
        blocks = build_blocks(self.callbacks.summarize, ARTICLES)
        # Gradio's default concurrency of 1 would serialise every user behind one summary.
        blocks.queue(default_concurrency_limit=self.concurrency_limit)
        return gr.mount_gradio_app(FastAPI(), blocks, path="/", css=CSS, ssr_mode=False)
