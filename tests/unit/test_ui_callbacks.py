"""The UI's callbacks over the model client when a model deployment fails: every path ends in a
readable message (no stack trace, no spinner left running). Stand-in handles raise what Serve raises: a
full queue, a replica that died under the call, no answer in time, a bug. (The same messages through
the real app: tests/faults.)"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from ray.exceptions import ActorDiedError
from ray.serve.exceptions import BackPressureError

from backend.client import ModelClient
from backend.models.index import Match
from shared.config import Limits
from shared.images import Embedder, InputSpec
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
    summary, info = run(last(ui.summarize(ARTICLE)))
    assert summary == ""  # a half-streamed summary is taken back, not left looking whole
    assert info == message


def test_a_summarizer_that_does_not_answer_in_time_says_so(tmp_path):
    ui = callbacks(tmp_path, stream=Stream("Summarizer", delay_s=5), limits=Limits(summary_timeout_s=1))
    summary, info = run(last(ui.summarize(ARTICLE)))
    assert (summary, info) == ("", "⚠️ **Try again shortly:** The summarizer did not answer within 1 s; try again.")


def test_an_empty_article_is_refused_before_any_call(tmp_path):
    stream = Stream("Summarizer")
    summary, info = run(last(callbacks(tmp_path, stream=stream).summarize("   ")))
    assert (summary, info) == ("", "⚠️ **Cannot summarize:** The article is empty: paste some text to summarize.")
    assert stream.calls == 0


def test_a_vision_replica_that_dies_twice_is_retried_once_then_reported(tmp_path):
    analyse = Method("Vision", ActorDiedError(), ActorDiedError())
    verdict, breeds, similar = run(callbacks(tmp_path, analyse=analyse).find(str(PHOTOS["dog"]), "", 5))
    assert analyse.calls == 2  # sent once more: Serve routes it to the replacement replica
    assert verdict == (
        "⚠️ **Try again shortly:** The vision model stopped during the request and is restarting; try again shortly."
    )
    assert similar == [] and breeds["visible"] is False


def test_a_full_vision_queue_is_not_retried(tmp_path):
    analyse = Method("Vision", BackPressureError(64, 64, retry_after_s=2))
    verdict, _, _ = run(callbacks(tmp_path, analyse=analyse).find(str(PHOTOS["dog"]), "", 5))
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
    verdict, _, _ = run(ui.find(str(PHOTOS["dog"]), "", 5))
    assert verdict == "⚠️ **Try again shortly:** The vision model did not answer within 1 s; try again."


def test_a_bug_behind_the_photo_tab_shows_a_message_not_a_traceback(tmp_path):
    verdict, _, _ = run(
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
    verdict, breeds, similar = run(ui.find(str(PHOTOS["cat"]), "", 2))
    assert verdict.startswith("**Not a dog**: this looks like a tabby") and breeds["visible"] is False
    assert similar == [
        (str(tmp_path / "7.jpg"), "cat · similarity 0.90"),
        (str(tmp_path / "8.jpg"), "unlabelled · similarity 0.50"),
    ]
    assert (tmp_path / "7.jpg").read_bytes() == b"\xff\xd8seven"
