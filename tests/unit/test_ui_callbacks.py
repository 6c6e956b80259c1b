"""The UI's callbacks over the model client when a model deployment fails: every path ends in a
readable message (no stack trace, no spinner left running). Stand-in handles raise what Serve raises: a
full queue, a replica that died under the call, no answer in time, a bug. (The same messages through
the real app: tests/faults.)"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from ray.exceptions import ActorDiedError
from ray.serve.exceptions import BackPressureError

from backend.client import ModelClient
from backend.models.index import GalleryPage, Match, StoredPhoto
from shared.config import Limits
from shared.errors import PhotoNotFound
from shared.images import Embedder, InputSpec
from shared.rate_limit import RateLimit
from tests.photos import PHOTOS
from ui.callbacks import Callbacks

EMBEDDER = Embedder("efficientnet-lite0", 1280, InputSpec(256, 224))


class Method:
    """A deployment handle's method: `.remote(...)` answers `result` or raises `errors` in turn."""

    def __init__(self, deployment: str, *errors: BaseException, result=None, delay_s: float = 0) -> None:
        self.deployment_name = deployment
        self.errors = list(errors)
        self.result = result
        self.delay_s = delay_s
        self.calls = 0

    async def _answer(self):
        self.calls += 1
        await asyncio.sleep(self.delay_s)
        if self.errors:
            raise self.errors.pop(0)
        return self.result

    def remote(self, *args):
        return self._answer()


class Stream(Method):
    def remote(self, *args):
        async def pieces():
            yield "A first sentence. "
            await self._answer()

        return pieces()


class Handle:
    def __init__(self, **methods: Method) -> None:
        self.__dict__.update(methods)

    def options(self, **_):
        return self


def run(coroutine):
    # In a thread of its own: after the browser tests, Playwright's event loop runs in this one.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def last(generator):
    answers = [answer async for answer in generator]
    return answers[-1]


def callbacks(
    tmp_path: Path,
    stream: Method | None = None,
    analyse: Method | None = None,
    add: Method | None = None,
    search: Method | None = None,
    limits: Limits = Limits(),
) -> Callbacks:
    summarizer = Handle(stream=stream or Stream("Summarizer"), status=Method("Summarizer", result=None))
    vision = Handle(embedder=Method("Vision", result=EMBEDDER), analyse=analyse or Method("Vision"))
    gallery = Handle(
        add_analysed=add or Method("Gallery"),
        search=search or Method("Gallery", result=[]),
        thumbnails=Method("Gallery", AssertionError("a Find fetches no thumbnails of its own")),
    )
    return Callbacks(ModelClient(summarizer, vision, gallery, limits), tmp_path)


ARTICLE = "An article. It has sentences. Three of them."


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (
            BackPressureError(32, 32, retry_after_s=5),
            "⚠️ **Try again shortly:** The summarizer is busy (its queue is full); try again shortly.",
        ),
        (
            ActorDiedError(),
            "⚠️ **Try again shortly:** The summarizer stopped during the request and is restarting; try again shortly.",
        ),
        (RuntimeError("a bug"), "⚠️ **Something went wrong:** the error is logged; try again in a moment."),
    ],
)
def test_a_failing_summarizer_ends_the_stream_with_a_message(tmp_path, error, message):
    ui = callbacks(tmp_path, stream=Stream("Summarizer", error))
    summary, info, _ = run(last(ui.summarize(ARTICLE)))
    assert summary == ""  # a half-streamed summary is taken back, not left looking whole
    assert info == message


def test_a_summarizer_that_does_not_answer_in_time_says_so(tmp_path):
    ui = callbacks(tmp_path, stream=Stream("Summarizer", delay_s=5), limits=Limits(summary_timeout_s=1))
    summary, info, _ = run(last(ui.summarize(ARTICLE)))
    assert (summary, info) == ("", "⚠️ **Try again shortly:** The summarizer did not answer within 1 s; try again.")


def test_an_empty_article_is_refused_before_any_call(tmp_path):
    stream = Stream("Summarizer")
    summary, info, _ = run(last(callbacks(tmp_path, stream=stream).summarize("   ")))
    assert (summary, info) == ("", "⚠️ **Cannot summarize:** The article is empty: paste some text to summarize.")
    assert stream.calls == 0


def test_a_vision_replica_that_dies_twice_is_retried_once_then_reported(tmp_path):
    analyse = Method("Vision", ActorDiedError(), ActorDiedError())
    verdict, breeds, similar, _ = run(callbacks(tmp_path, analyse=analyse).find(str(PHOTOS["dog"]), "", 5))
    assert analyse.calls == 2  # sent once more: Serve routes it to the replacement replica
    assert verdict == (
        "⚠️ **Try again shortly:** The vision model stopped during the request and is restarting; try again shortly."
    )
    assert similar["value"] == [] and similar["visible"] is False and breeds["visible"] is False


def test_a_full_vision_queue_is_not_retried(tmp_path):
    analyse = Method("Vision", BackPressureError(64, 64, retry_after_s=2))
    verdict, *_ = run(callbacks(tmp_path, analyse=analyse).find(str(PHOTOS["dog"]), "", 5))
    assert analyse.calls == 1
    assert verdict == "⚠️ **Try again shortly:** The vision model is busy (its queue is full); try again shortly."


def test_a_gallery_add_is_never_sent_twice(tmp_path):
    add = Method("Gallery", ActorDiedError())
    ui = callbacks(tmp_path, analyse=Method("Vision", result=SimpleNamespace()), add=add)
    verdict = run(ui.add(str(PHOTOS["dog"]), "", "Rex"))
    assert add.calls == 1  # a replica that died after committing would otherwise store it twice
    assert verdict == (
        "⚠️ **Try again shortly:** The gallery stopped during the request and is restarting; try again shortly."
    )


def test_a_vision_model_that_does_not_answer_in_time_says_so(tmp_path):
    ui = callbacks(tmp_path, analyse=Method("Vision", delay_s=5), limits=Limits(photo_timeout_s=1))
    verdict, *_ = run(ui.find(str(PHOTOS["dog"]), "", 5))
    assert verdict == "⚠️ **Try again shortly:** The vision model did not answer within 1 s; try again."


def test_a_bug_behind_the_photo_tab_shows_a_message_not_a_traceback(tmp_path):
    verdict, *_ = run(
        callbacks(tmp_path, analyse=Method("Vision", KeyError("internal detail"))).find(str(PHOTOS["dog"]), "", 5)
    )
    assert verdict == "⚠️ **Something went wrong:** the error is logged; try again in a moment."


def test_a_find_shows_the_thumbnails_that_came_with_its_matches(tmp_path):
    """One hop: the gallery's answer carries the thumbnails; the UI asks for nothing more."""
    analysis = SimpleNamespace(
        embedding=np.zeros(EMBEDDER.dim, np.float32), is_dog=False, best_guess="tabby", dog_score=0.01,
        model="dog-breeds/1", top_breeds=lambda k: [("beagle", 0.5)] * k,
    )  # fmt: skip
    matches = [Match(7, "cat", 0.9, b"\xff\xd8seven"), Match(8, None, 0.5, b"\xff\xd8eight")]
    ui = callbacks(tmp_path, analyse=Method("Vision", result=analysis), search=Method("Gallery", result=matches))
    verdict, breeds, similar, _ = run(ui.find(str(PHOTOS["cat"]), "", 2))
    assert verdict.startswith("**Not a dog**: this looks like a tabby") and breeds["visible"] is False
    assert similar["visible"] is True and similar["value"] == [
        (str(tmp_path / "7.jpg"), "cat · similarity 0.90"),
        (str(tmp_path / "8.jpg"), "unlabelled · similarity 0.50"),
    ]
    assert (tmp_path / "7.jpg").read_bytes() == b"\xff\xd8seven"


class Calls(Method):
    """A handle method that answers by calling `function` with the call's arguments."""

    def __init__(self, deployment: str, function) -> None:
        super().__init__(deployment)
        self.function = function

    def remote(self, *args):
        async def answer():
            return self.function(*args)

        return answer()


class StandInGallery:
    """The Gallery deployment's management methods over a dict of photos, newest id first."""

    def __init__(self, count: int) -> None:
        now = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)
        self.photos = {
            i: StoredPhoto(i, "husky" if i % 2 else "pug", "folder", f"seed:{i}.jpg", now) for i in range(1, count + 1)
        }

    def page(self, offset, limit, label):
        chosen = [p for i, p in sorted(self.photos.items(), reverse=True) if label is None or p.label == label]
        return GalleryPage(len(chosen), chosen[offset : offset + limit])

    def photo(self, photo_id):
        if photo_id not in self.photos:
            raise PhotoNotFound(f"No photo {photo_id} in the gallery.")
        return self.photos[photo_id]

    def relabel(self, photo_id, label):
        self.photos[photo_id] = dataclasses.replace(self.photo(photo_id), label=label, label_source="user")
        return self.photos[photo_id]

    def delete(self, photo_id):
        self.photo(photo_id)
        del self.photos[photo_id]

    def thumbnails(self, ids):
        return [f"jpeg-{i}".encode() if i in self.photos else None for i in ids]

    def handle(self) -> Handle:
        names = ("page", "photo", "relabel", "delete", "thumbnails")
        return Handle(**{name: Calls("Gallery", getattr(self, name)) for name in names})


def gallery_tab(tmp_path: Path, photos: int) -> tuple[Callbacks, StandInGallery]:
    store = StandInGallery(photos)
    return Callbacks(ModelClient(Handle(), Handle(), store.handle(), Limits()), tmp_path), store


def test_the_gallery_tab_pages_through_the_photos_newest_first(tmp_path):
    ui, _ = gallery_tab(tmp_path, photos=30)
    grid, status, view, *_ = run(ui.browse(""))
    files = grid["value"]
    assert status == "Photos 1–24 of 30, newest first." and view.ids[:2] == (30, 29) and len(files) == 24
    assert files[0] == (str(tmp_path / "30.jpg"), "#30 · pug") and (tmp_path / "30.jpg").read_bytes() == b"jpeg-30"
    _, status, view, *_ = run(ui.older(view))
    assert status == "Photos 25–30 of 30, newest first." and view.ids == (6, 5, 4, 3, 2, 1)
    assert run(ui.older(view))[2].offset == 24  # no page past the last
    assert run(ui.newer(view))[2].offset == 0
    _, status, view, *_ = run(ui.browse("  husky "))
    assert status == "Photos 1–15 of 15 labelled **husky**, newest first." and set(view.ids) == set(range(1, 30, 2))
    assert run(ui.browse("beagle"))[1] == "No photos labelled **beagle**."
    # Buttons pressed before the tab's first page loaded: the first page, or a plain line.
    assert run(ui.older(None))[2].ids[0] == 30  # the newest page
    assert run(ui.delete(None))[1].startswith("⚠️ **Nothing selected:** click a photo first.")


def test_the_gallery_tab_relabels_and_deletes_the_selected_photo(tmp_path):
    ui, store = gallery_tab(tmp_path, photos=3)
    view = run(ui.browse(""))[2]
    _, _, view, editor, details, label, _ = run(ui.select(view, SimpleNamespace(index=1)))
    assert view.selected == 2 and editor["visible"] is True and label == "pug"
    assert details.startswith("**Photo #2** · **pug** (folder) · from `seed:2.jpg` · added 2026-12-03 12:00 UTC")
    _, status, view, _, details, label, _ = run(ui.relabel(view, "  Shiba Inu "))
    assert status.startswith("Photo #2 is now labelled **Shiba Inu**.") and store.photos[2].label == "Shiba Inu"
    assert label == "Shiba Inu" and "(user)" in details
    _, status, _, _, _, _, _ = run(ui.relabel(view, "bad\x00label"))
    assert status.startswith("⚠️ **Cannot use this label:** label: control character U+0000 is not allowed")
    assert store.photos[2].label == "Shiba Inu"
    grid, status, view, editor, *_ = run(ui.delete(view))
    assert status.startswith("Deleted photo #2.") and 2 not in store.photos and view.selected is None
    assert editor["visible"] is False and [caption for _, caption in grid["value"]] == ["#3 · husky", "#1 · husky"]
    # Deleted meanwhile (in another tab, by the CLI): said plainly.
    gone = dataclasses.replace(view, selected=3)
    del store.photos[3]
    assert run(ui.delete(gone))[1].startswith("⚠️ **Not in the gallery:** No photo 3 in the gallery.")


def test_a_user_over_the_rate_limit_is_told_to_slow_down(tmp_path):
    analysis = SimpleNamespace(
        embedding=np.zeros(EMBEDDER.dim, np.float32), is_dog=False, best_guess="tabby", dog_score=0.01,
        model="dog-breeds/1", top_breeds=lambda k: [("beagle", 0.5)] * k,
    )  # fmt: skip
    vision = Handle(embedder=Method("Vision", result=EMBEDDER), analyse=Method("Vision", result=analysis))
    gallery = Handle(search=Method("Gallery", result=[]))
    limit = RateLimit(requests_per_s=0.01, burst=2)
    ui = Callbacks(ModelClient(Handle(), vision, gallery, Limits()), tmp_path, limit)
    verdicts = [run(ui.find(str(PHOTOS["cat"]), "", 2))[0] for _ in range(3)]
    assert [v.startswith("**Not a dog**") for v in verdicts[:2]] == [True, True]
    assert verdicts[2].startswith("⚠️ **Slow down:** Too many requests: 0.01 per second (bursts of 2) per user")
