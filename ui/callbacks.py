"""The UI's behaviour: plain async callbacks over the model client, and the one mapping from errors to
what the UI shows. Every failure ends in a readable line where the answer would be, never a spinner
left running or a stack trace."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from backend.client import ModelClient
from backend.models.analysis import ImageAnalysis
from backend.models.index import StoredPhoto
from shared.errors import BackendUnavailable, InvalidArticle, InvalidImage, InvalidLabel, PhotoNotFound, RateLimited
from shared.rate_limit import RateLimit, TokenBuckets
from shared.schemas import SummarizeOptions

logger = logging.getLogger("ray.serve")

# What the UI calls each kind of failure; the error's own sentence follows. Most specific first.
PROBLEM_TITLES: list[tuple[type[Exception], str]] = [
    (InvalidArticle, "Cannot summarize"),
    (InvalidImage, "Cannot use this photo"),
    (InvalidLabel, "Cannot use this label"),
    (PhotoNotFound, "Not in the gallery"),
    (RateLimited, "Slow down"),
    (BackendUnavailable, "Try again shortly"),
]
GALLERY_PAGE = 24  # photos per page of the Gallery tab: four rows of six
BATCH_COLUMNS = ["Photo", "Dog?", "Top breed", "Confidence", "Note"]  # the table of several photos
BATCH_CHUNK = 8  # photos sent to Vision together: batched there, and the progress bar moves between chunks
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


@dataclass(frozen=True)
class GalleryView:
    """What the Gallery tab shows: a page of photos (their ids, newest first), and the one selected."""

    label: str | None = None
    offset: int = 0
    total: int = 0
    ids: tuple[int, ...] = ()
    selected: int | None = None


def caller_of(request: gr.Request | None) -> str:
    """Whom the UI's rate limit counts: the login, else the browser's address."""
    if request is None:
        return "unknown"
    if request.username:
        return f"login:{request.username}"
    return f"address:{request.client.host if request.client else 'unknown'}"


class Callbacks:
    """Summarize, Find and Add, and the Gallery tab's browse, relabel and delete, as the UI's buttons
    call them. The ones that run a model count against the user's rate limit, if one is set."""

    def __init__(self, models: ModelClient, thumbnail_dir: Path, rate_limit: RateLimit | None = None) -> None:
        self.models = models
        # Gallery photos as JPEG files, each written once (a stored photo's image never changes): Gradio
        # serves files as they are, where PIL images would be re-encoded (WebP) in every answer.
        self.thumbnail_dir = thumbnail_dir
        self.buckets = TokenBuckets(rate_limit) if rate_limit else None

    def _admit(self, request: gr.Request | None) -> None:
        if self.buckets is not None:
            self.buckets.admit(caller_of(request), who="user")

    async def summarize(
        self, article: str, length: int = 3, request: gr.Request | None = None
    ) -> AsyncIterator[tuple[str, str, list[str] | None]]:
        """Yields (summary so far, info line, the article's sentences it is made of, when the model picks
        sentences). A failure ends with an empty summary (a half-streamed one is taken back, not left
        looking whole) and the reason in the info line."""
        try:
            self._admit(request)
        except Exception as exc:
            yield "", problem(exc), None
            return
        async for answer in self._stream_summary(article, length):
            yield answer

    async def _stream_summary(self, article: str, length: int) -> AsyncIterator[tuple[str, str, list[str] | None]]:
        started = time.perf_counter()
        summary, pieces = "", []
        try:
            async for piece in self.models.stream_summary(article or "", summary_options(length)):
                summary += piece
                pieces.append(piece.strip())
                yield summary, "Summarizing…", None
            model = await self.models.summarizer_model()
        except Exception as exc:
            yield "", problem(exc), None
        else:
            # An extractive model streams the sentences it picked, one a piece.
            picked = pieces if model.startswith("extractive/") else None
            yield summary, f"{model} · {time.perf_counter() - started:.2f} s", picked

    async def summarize_url(
        self, url: str, length: int = 3, request: gr.Request | None = None
    ) -> AsyncIterator[tuple[Any, str, str, list[str] | None]]:
        """The article at `url`, fetched and reduced to its text into the article box, then summarized:
        yields (article, summary so far, info line, its sentences)."""
        try:
            if not url or not url.strip():
                raise InvalidArticle("Give the address of an article first.")
            self._admit(request)
            article = await self.models.fetch_article(url.strip())
        except Exception as exc:
            yield gr.skip(), "", problem(exc), None
            return
        yield article, "", "Fetched the article; summarizing…", None
        async for summary, info, picked in self._stream_summary(article, length):
            yield gr.skip(), summary, info, picked

    async def summary_views(self, article: str, summary: str, picked: list[str] | None) -> tuple[Any, Any]:
        """(the article with the summary's sentences highlighted, the summary as a file to download)."""
        if not summary:
            return hidden(), hidden()
        path = self.thumbnail_dir / f"summary-{uuid.uuid4().hex[:8]}.txt"
        await asyncio.to_thread(path.write_text, summary + "\n", encoding="utf-8")
        download = gr.update(value=str(path), visible=True)
        if not picked:  # an abstractive model writes sentences of its own
            return hidden(), download
        return gr.update(value=highlighted(article, picked), visible=True), download

    async def find(
        self, photo: str | None, url: str, matches: int, explain: bool = False, request: gr.Request | None = None
    ) -> tuple[str, Any, list, Any]:
        """(verdict, breed label, similar photos, heat map); the breed label and the heat map are hidden
        when it is not a dog, the heat map also unless `explain`."""
        try:
            self._admit(request)
            data = await self._photo_bytes(photo, url)
            answer = await self.models.find(data, k=4, n=int(matches), thumbnails=True, explain=explain)
            shown = [
                (m.id, m.thumbnail, f"{m.label or 'unlabelled'} · similarity {m.similarity:.2f}")
                for m in answer.matches
            ]
            similar = await asyncio.to_thread(self._image_files, shown)
        except Exception as exc:
            return problem(exc), gr.update(**HIDDEN_BREEDS), gr.update(value=[], visible=False), hidden()
        similar = gr.update(value=similar, visible=bool(similar))
        analysis, explanation = answer.analysis, answer.explanation
        answered_by = f"\n\nAnswered by `{analysis.model}`."  # which registered version, across live swaps
        looked = hidden()
        if explanation is not None and explanation.heat is not None:
            label = f"Where it looked for {explanation.breed} (red: the strongest evidence)"
            alt = f"The photo with a heat map over it: in red, where the model saw most of a {explanation.breed}"
            looked = gr.update(value=answer.overlay, label=label, alt_text=alt, visible=True)
        elif explanation is not None:
            answered_by += f" No heat map: {explanation.unavailable}"
        if not analysis.is_dog:
            verdict = (
                f"**Not a dog**: this looks like a {analysis.best_guess} "
                f"(dog score {analysis.dog_score:.2f}). The closest photos in the gallery are below."
            )
            return verdict + answered_by, gr.update(**HIDDEN_BREEDS), similar, hidden()  # no breed to explain
        top = analysis.top_breeds(5)
        breed, p = top[0]
        verdict = f"**A dog** (dog score {analysis.dog_score:.2f}), most likely a **{breed}** ({p:.0%})."
        return verdict + answered_by, gr.update(value=dict(top), visible=True), similar, looked

    async def explain_toggled(
        self, photo: str | None, url: str, matches: int, explain: bool, request: gr.Request | None = None
    ) -> tuple:
        """The heat map checkbox: on, the photo is found again with its map; off, the map goes."""
        if not explain:
            return gr.skip(), gr.skip(), gr.skip(), hidden()
        if not photo and not (url and url.strip()):
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()  # nothing to explain yet: the next Find will
        return await self.find(photo, url, matches, explain, request)

    async def add(self, photo: str | None, url: str, label: str, request: gr.Request | None = None) -> str:
        try:
            self._admit(request)
            source = f"url:{url.strip()}" if not photo and url else "upload:ui"
            stored, _ = await self.models.add(await self._photo_bytes(photo, url), label, source, added_by="ui")
        except Exception as exc:
            return problem(exc)
        what = f"{stored.label} ({stored.label_source})" if stored.label else "no label"
        return f"Added to the gallery as photo #{stored.id}, {what}."

    async def analyse_many(
        self, files: list[str] | None, request: gr.Request | None = None, progress: gr.Progress = gr.Progress()
    ) -> tuple[str, Any, Any]:
        """Several photos: (status line, table with a row per photo in order, CSV of the table). A file
        that is not a usable image gets its row with the reason; the others are answered."""
        if not files:
            return warning("No photos", "choose or drop some photos first."), hidden(), hidden(), hidden(), hidden()
        try:
            self._admit(request)
            sizes = await asyncio.to_thread(lambda: [Path(f).stat().st_size for f in files])
            self.models.check_batch(sizes)
            rows = []
            for start in range(0, len(files), BATCH_CHUNK):
                progress((start, len(files)), desc="Analysing the photos", unit="photos")
                chunk = files[start : start + BATCH_CHUNK]
                photos = await asyncio.to_thread(lambda chunk=chunk: [Path(f).read_bytes() for f in chunk])
                answers = await self.models.analyse_photos(photos)
                rows += [batch_row(Path(f).name, answer) for f, answer in zip(chunk, answers, strict=True)]
            table = await asyncio.to_thread(self._csv, rows)
        except Exception as exc:
            return problem(exc), hidden(), hidden(), hidden(), hidden()
        dogs = sum(row[1] == "yes" for row in rows)
        failed = sum(row[1] == "?" for row in rows)
        status = f"{len(rows)} photos: {dogs} {'dog' if dogs == 1 else 'dogs'}"
        status += f", {failed} could not be used." if failed else "."
        shown = gr.update(value={"headers": BATCH_COLUMNS, "data": rows}, visible=True)
        # Photos that can be added, by their place in the upload (names may repeat); the dogs chosen.
        usable = [(f"{i + 1}. {row[0]}", i) for i, row in enumerate(rows) if row[1] != "?"]
        chosen = gr.update(choices=usable, value=[i for i, row in enumerate(rows) if row[1] == "yes"], visible=True)
        return status, shown, gr.update(value=str(table), visible=True), chosen, gr.update(visible=bool(usable))

    async def add_many(
        self, files: list[str] | None, chosen: list[int] | None, request: gr.Request | None = None
    ) -> str:
        """The chosen photos of a batch added to the gallery, each labelled with its predicted breed if it
        is a dog: a line saying what each became."""
        picked = [files[i] for i in sorted(chosen or []) if files and 0 <= i < len(files)]
        if not picked:
            return warning("Nothing chosen", "tick the photos to add first.")
        added: list[str] = []
        try:
            self._admit(request)
            for path in picked:
                data = await asyncio.to_thread(Path(path).read_bytes)
                stored, _ = await self.models.add(data, None, f"upload:{Path(path).name}", added_by="ui")
                added.append(f"#{stored.id} {stored.label or 'no label'}")
        except Exception as exc:  # the photos before it stay added: say which
            done = f"Added {len(added)} of {len(picked)}: {', '.join(added)}.\n\n" if added else ""
            return done + problem(exc)
        noun = "photo" if len(added) == 1 else "photos"
        return f"Added {len(added)} {noun} to the gallery: {', '.join(added)}."

    def _csv(self, rows: list[list[str]]) -> Path:
        path = self.thumbnail_dir / f"photos-{uuid.uuid4().hex[:8]}.csv"
        with path.open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(BATCH_COLUMNS)
            writer.writerows(rows)
        return path

    async def _photo_bytes(self, photo: str | None, url: str) -> bytes:
        if photo:
            return await asyncio.to_thread(Path(photo).read_bytes)
        if url and url.strip():
            return await self.models.fetch(url.strip())
        raise InvalidImage("Upload a photo or give an image URL first.")

    # ------------------------------------------------------------------ the Gallery tab
    # Each answers the tab's seven outputs: (photos, status line, view, editor, details, label box,
    # delete confirmation).

    async def browse(self, label: str) -> tuple:
        """The newest photos, only those labelled `label` if given."""
        return await self._page(GalleryView(label=label.strip() or None))

    async def newer(self, view: GalleryView | None) -> tuple:
        view = view or GalleryView()  # before the first page has loaded
        return await self._page(dataclasses.replace(view, offset=max(0, view.offset - GALLERY_PAGE), selected=None))

    async def older(self, view: GalleryView | None) -> tuple:
        view = view or GalleryView()
        offset = view.offset + GALLERY_PAGE if view.offset + GALLERY_PAGE < view.total else view.offset
        return await self._page(dataclasses.replace(view, offset=offset, selected=None))

    async def select(self, view: GalleryView, event: gr.SelectData) -> tuple:
        """A photo clicked in the grid: its details and the editor."""
        photo_id = view.ids[event.index]
        try:
            photo = await self.models.photo(photo_id)
        except Exception as exc:
            return gr.skip(), problem(exc), view, gr.update(visible=False), "", "", gr.update(visible=False)
        selected = dataclasses.replace(view, selected=photo_id)
        return gr.skip(), gr.skip(), selected, gr.update(visible=True), describe(photo), photo.label or "", hidden()

    async def relabel(self, view: GalleryView | None, label: str) -> tuple:
        view = view or GalleryView()
        if view.selected is None:
            return await self._page(view, warning("Nothing selected", "click a photo first."))
        try:
            photo = await self.models.relabel(view.selected, label)
        except Exception as exc:
            return await self._page(view, problem(exc))
        what = f"labelled **{photo.label}**" if photo.label else "without a label"
        return await self._page(view, f"Photo #{photo.id} is now {what}.")

    async def delete(self, view: GalleryView | None) -> tuple:
        view = view or GalleryView()
        if view.selected is None:
            return await self._page(view, warning("Nothing selected", "click a photo first."))
        try:
            await self.models.delete(view.selected)
        except Exception as exc:
            return await self._page(dataclasses.replace(view, selected=None), problem(exc))
        return await self._page(dataclasses.replace(view, selected=None), f"Deleted photo #{view.selected}.")

    async def _page(self, view: GalleryView, message: str = "") -> tuple:
        try:
            page = await self.models.gallery_page(view.offset, GALLERY_PAGE, view.label)
            if not page.photos and view.offset:  # the last photo of the last page went: one page back
                view = dataclasses.replace(view, offset=max(0, view.offset - GALLERY_PAGE))
                page = await self.models.gallery_page(view.offset, GALLERY_PAGE, view.label)
            thumbnails = await self.models.thumbnails([photo.id for photo in page.photos])
        except Exception as exc:
            return [], problem(exc), view, gr.update(visible=False), "", "", hidden()
        shown = [
            (p.id, t, f"#{p.id} · {p.label or 'unlabelled'}") for p, t in zip(page.photos, thumbnails, strict=True)
        ]
        files = await asyncio.to_thread(self._image_files, shown)
        ids = tuple(p.id for p in page.photos)
        view = dataclasses.replace(
            view, total=page.total, ids=ids, selected=view.selected if view.selected in ids else None
        )
        labelled = f" labelled **{view.label}**" if view.label else ""
        if page.photos:
            status = f"Photos {view.offset + 1}–{view.offset + len(ids)} of {page.total}{labelled}, newest first."
        else:
            status = f"No photos{labelled}."
        selected = next((p for p in page.photos if p.id == view.selected), None)
        editor = gr.update(visible=selected is not None)
        details, label = (describe(selected), selected.label or "") if selected else ("", "")
        # A new page with no photo picked: the grid, not a preview of the last one clicked.
        grid = gr.update(value=files, selected_index=None)
        return grid, f"{message}\n\n{status}" if message else status, view, editor, details, label, hidden()

    def _image_files(self, images: list[tuple[int, bytes | None, str]]) -> list[tuple[str, str]]:
        """(photo id, JPEG, caption) as (file, caption), the gallery component's value."""
        shown = []
        for photo_id, thumbnail, caption in images:
            path = self.thumbnail_dir / f"{photo_id}.jpg"
            if not path.exists() and thumbnail:
                partial = path.with_name(f"{photo_id}.{uuid.uuid4().hex}.part")
                partial.write_bytes(thumbnail)
                partial.replace(path)  # a concurrent answer never sees half a file
            if path.exists():
                shown.append((str(path), caption))
        return shown


def summary_options(length: int) -> SummarizeOptions:
    """The length slider's sentences, for either kind of model: an extractive one keeps that many, an
    abstractive one writes about 40 words (~50 tokens) per sentence asked for."""
    sentences = int(length)
    return SummarizeOptions(max_sentences=sentences, max_length=50 * sentences, min_length=10 * sentences)


def highlighted(article: str, sentences: list[str]) -> list[tuple[str, str | None]]:
    """The article as HighlightedText segments, the summary's sentences marked "in the summary" where
    each first occurs (found whitespace-blind: the summarizer reads a paragraph's lines as one)."""
    spans = []
    for sentence in sentences:
        pattern = r"\s+".join(map(re.escape, sentence.split()))
        if pattern and (match := re.search(pattern, article)):
            spans.append(match.span())
    segments: list[tuple[str, str | None]] = []
    at = 0
    for start, end in sorted(spans):
        if start < at:  # overlapping (a sentence inside another): the first one holds
            continue
        if start > at:
            segments.append((article[at:start], None))
        segments.append((article[start:end], "in the summary"))
        at = end
    if at < len(article):
        segments.append((article[at:], None))
    return segments


def batch_row(name: str, answer: ImageAnalysis | Exception) -> list[str]:
    """A row of the table of several photos: name, dog or not, top breed and its probability, and what
    a non-dog looks like or why a file could not be used."""
    if isinstance(answer, Exception):
        return [name, "?", "", "", problem(answer).removeprefix("⚠️ ").replace("**", "")]
    if not answer.is_dog:
        return [name, "no", "", "", f"Looks like: {answer.best_guess} (dog score {answer.dog_score:.2f})."]
    breed, probability = answer.top_breeds(1)[0]
    return [name, "yes", breed, f"{probability:.0%}", ""]


def hidden() -> Any:
    return gr.update(visible=False)


def describe(photo: StoredPhoto) -> str:
    """A gallery photo's details, as the Gallery tab shows the selected one."""
    label = f"**{photo.label}** ({photo.label_source})" if photo.label else "no label"
    added = f"added {photo.added_at:%Y-%m-%d %H:%M} UTC" + (f" by {photo.added_by}" if photo.added_by else "")
    return f"**Photo #{photo.id}** · {label} · from `{photo.source}` · {added}"
