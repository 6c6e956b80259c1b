"""The UI's behaviour: plain async callbacks over the model client, and the one mapping from errors to
what the UI shows. Every failure ends in a readable line where the answer would be, never a spinner
left running or a stack trace."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import gradio as gr

from backend.client import ModelClient
from backend.models.index import Match
from shared.errors import BackendUnavailable, InvalidArticle, InvalidImage
from shared.schemas import SummarizeOptions

logger = logging.getLogger("ray.serve")

# What the UI calls each kind of failure; the error's own sentence follows. Most specific first.
PROBLEM_TITLES: list[tuple[type[Exception], str]] = [
    (InvalidArticle, "Cannot summarize"),
    (InvalidImage, "Cannot use this photo"),
    (BackendUnavailable, "Try again shortly"),
]
HIDDEN_BREEDS = {"value": None, "visible": False}


def warning(title: str, message: str) -> str:
    return f"⚠️ **{title}:** {message}"


def problem(exc: Exception) -> str:
    """The line the UI shows for a failed action. An unexpected error is logged once and shown as
    a generic line (its details are for the operator, not the user)."""
    for error, title in PROBLEM_TITLES:
        if isinstance(exc, error):
            return warning(title, str(exc))
    logger.error("a UI callback failed", exc_info=exc)
    return warning("Something went wrong", "the error is logged; try again in a moment.")


class Callbacks:
    """Summarize, Find and Add, as the UI's buttons call them."""

    def __init__(self, models: ModelClient, thumbnail_dir: Path) -> None:
        self.models = models
        # Gallery photos as JPEG files, each written once (a stored photo never changes): Gradio serves
        # files as they are, where PIL images would be re-encoded (WebP) in every answer.
        self.thumbnail_dir = thumbnail_dir

    async def summarize(self, article: str) -> AsyncIterator[tuple[str, str]]:
        """Yields (summary so far, info line). A failure ends with an empty summary (a half-streamed
        one is taken back, not left looking whole) and the reason in the info line."""
        started = time.perf_counter()
        summary = ""
        try:
            async for piece in self.models.stream_summary(article or "", SummarizeOptions()):
                summary += piece
                yield summary, "Summarizing…"
            model = await self.models.summarizer_model()
        except Exception as exc:
            yield "", problem(exc)
        else:
            yield summary, f"{model} · {time.perf_counter() - started:.2f} s"

    async def find(self, photo: str | None, url: str, matches: int) -> tuple[str, Any, list]:
        """(verdict, breed label, similar photos); the breed label is hidden when it is not a dog."""
        try:
            answer = await self.models.find(await self._photo_bytes(photo, url), k=4, n=int(matches), thumbnails=True)
            similar = await asyncio.to_thread(self._gallery_files, answer.matches)
        except Exception as exc:
            return problem(exc), gr.update(**HIDDEN_BREEDS), []
        analysis = answer.analysis
        answered_by = f"\n\nAnswered by `{analysis.model}`."  # which registered version, across live swaps
        if not analysis.is_dog:
            verdict = (
                f"**Not a dog**: this looks like a {analysis.best_guess} "
                f"(dog score {analysis.dog_score:.2f}). The closest photos in the gallery are below."
            )
            return verdict + answered_by, gr.update(**HIDDEN_BREEDS), similar
        top = analysis.top_breeds(5)
        breed, p = top[0]
        verdict = f"**A dog** (dog score {analysis.dog_score:.2f}), most likely a **{breed}** ({p:.0%})."
        return verdict + answered_by, gr.update(value=dict(top), visible=True), similar

    async def add(self, photo: str | None, url: str, label: str) -> str:
        try:
            source = f"url:{url.strip()}" if not photo and url else "upload:ui"
            stored = await self.models.add(await self._photo_bytes(photo, url), label, source)
        except Exception as exc:
            return problem(exc)
        what = f"{stored.label} ({stored.label_source})" if stored.label else "no label"
        return f"Added to the gallery as photo #{stored.id}, {what}."

    async def _photo_bytes(self, photo: str | None, url: str) -> bytes:
        if photo:
            return await asyncio.to_thread(Path(photo).read_bytes)
        if url and url.strip():
            return await self.models.fetch(url.strip())
        raise InvalidImage("Upload a photo or give an image URL first.")

    def _gallery_files(self, matches: list[Match]) -> list[tuple[str, str]]:
        """The matches as (JPEG file, caption), the gallery component's value."""
        shown = []
        for match in matches:
            path = self.thumbnail_dir / f"{match.id}.jpg"
            if not path.exists() and match.thumbnail:
                partial = path.with_name(f"{match.id}.{uuid.uuid4().hex}.part")
                partial.write_bytes(match.thumbnail)
                partial.replace(path)  # a concurrent answer never sees half a file
            if path.exists():
                shown.append((str(path), f"{match.label or 'unlabelled'} · similarity {match.similarity:.2f}"))
        return shown
