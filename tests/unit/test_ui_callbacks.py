"""The UI's callbacks when a model deployment fails: every path ends in a readable message (no stack
trace, no spinner left running). Stand-in handles raise what Serve raises: a full queue, a replica that
died under the call, no answer in time, a bug."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import pytest
from ray.exceptions import ActorDiedError
from ray.serve.exceptions import BackPressureError

from shared.config import Limits
from shared.images import Embedder, InputSpec
from shared.photos import PhotoService
from tests.photos import PHOTOS
from ui.app import Callbacks, PhotoCallbacks

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


def summarizer(stream: Method) -> Handle:
    return Handle(stream=stream, status=Method("Summarizer", result=None))


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (BackPressureError(32, 32, retry_after_s=5), "⚠️ **Summarizer unavailable:** The summarizer is busy (its queue is full); try again shortly."),
        (ActorDiedError(), "⚠️ **Summarizer unavailable:** The summarizer stopped during the request and is restarting; try again shortly."),
        (RuntimeError("a bug"), "⚠️ **Summarizer unavailable:** try again in a moment."),
    ],
)
def test_a_failing_summarizer_ends_the_stream_with_a_message(error, message):
    callbacks = Callbacks(summarizer(Stream("Summarizer", error)), Limits())
    summary, info = run(last(callbacks.summarize("An article. It has sentences. Three of them.")))
    assert summary == ""  # a half-streamed summary is taken back, not left looking whole
    assert info == message


def test_a_summarizer_that_does_not_answer_in_time_says_so():
    callbacks = Callbacks(summarizer(Stream("Summarizer", delay_s=5)), Limits(summary_timeout_s=1))
    summary, info = run(last(callbacks.summarize("An article. It has sentences. Three of them.")))
    assert (summary, info) == ("", "⚠️ **Summarizer busy:** no answer within 1 s; try again.")


def photo_callbacks(analyse: Method, add: Method | None = None, limits: Limits = Limits()) -> PhotoCallbacks:
    vision = Handle(embedder=Method("Vision", result=EMBEDDER), analyse=analyse)
    gallery = Handle(add=add or Method("Gallery"), search=Method("Gallery", result=[]), thumbnails=Method("Gallery", result=[]))
    return PhotoCallbacks(PhotoService(vision, gallery, limits), gallery)


def test_a_vision_replica_that_dies_twice_is_retried_once_then_reported():
    analyse = Method("Vision", ActorDiedError(), ActorDiedError())
    verdict, breeds, similar = run(photo_callbacks(analyse).find(str(PHOTOS["dog"]), "", 5))
    assert analyse.calls == 2  # sent once more: Serve routes it to the replacement replica
    assert verdict == "⚠️ **Try again shortly:** The vision model stopped during the request and is restarting; try again shortly."
    assert similar == [] and breeds["visible"] is False


def test_a_full_vision_queue_is_not_retried():
    analyse = Method("Vision", BackPressureError(64, 64, retry_after_s=2))
    verdict, _, _ = run(photo_callbacks(analyse).find(str(PHOTOS["dog"]), "", 5))
    assert analyse.calls == 1
    assert verdict == "⚠️ **Try again shortly:** The vision model is busy (its queue is full); try again shortly."


def test_a_gallery_add_is_never_sent_twice():
    # What Vision answers, as far as an add with a given label reads it.
    analysis = SimpleNamespace(embedding=np.zeros(EMBEDDER.dim, np.float32), embedder=EMBEDDER.name)
    add = Method("Gallery", ActorDiedError())
    verdict = run(photo_callbacks(Method("Vision", result=analysis), add).add(str(PHOTOS["dog"]), "", "Rex"))
    assert add.calls == 1  # a replica that died after committing would otherwise store it twice
    assert verdict == "⚠️ **Try again shortly:** The gallery stopped during the request and is restarting; try again shortly."


def test_a_vision_model_that_does_not_answer_in_time_says_so():
    analyse = Method("Vision", delay_s=5)
    verdict, _, _ = run(photo_callbacks(analyse, limits=Limits(photo_timeout_s=1)).find(str(PHOTOS["dog"]), "", 5))
    assert verdict == "⚠️ **Vision model busy:** no answer in time; try again."


def test_a_bug_behind_the_photo_tab_shows_a_message_not_a_traceback():
    verdict, _, _ = run(photo_callbacks(Method("Vision", KeyError("internal detail"))).find(str(PHOTOS["dog"]), "", 5))
    assert verdict == "⚠️ **Vision model unavailable:** try again in a moment."

