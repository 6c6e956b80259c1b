"""The UI's Gradio queue polls at Gradio's pace while events come in, and 20x slower when idle."""

import gradio as gr
import pytest
from gradio_client import Client

from ui import queue as quiet
from ui.queue import QuietQueue, quieten


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(quiet.time, "monotonic", clock)
    return clock


def test_an_event_makes_the_queue_poll_fast_until_it_has_been_quiet_a_while(clock):
    with gr.Blocks() as blocks:
        text = gr.Textbox()
        out = gr.Textbox()
        text.submit(lambda value: value.upper(), text, out, api_name="shout")
    blocks.queue()
    quieten(blocks)
    assert isinstance(blocks._queue, QuietQueue)
    assert blocks._queue.sleep_when_free == quiet.IDLE_POLL_S
    assert blocks._queue.progress_update_sleep_when_free == quiet.IDLE_PROGRESS_S

    _, local_url, _ = blocks.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    try:
        # An event goes through Gradio's queue and is answered: the queue still works.
        assert Client(local_url, verbose=False).predict("woof", api_name="/shout") == "WOOF"
        assert blocks._queue.sleep_when_free == quiet.BUSY_POLL_S
        assert blocks._queue.progress_update_sleep_when_free == quiet.BUSY_PROGRESS_S
        clock.now += quiet.STAY_BUSY_S + 0.1
        assert blocks._queue.sleep_when_free == quiet.IDLE_POLL_S
    finally:
        blocks.close()
