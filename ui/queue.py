"""Gradio's event queue, quiet while nobody uses it.

Gradio's queue looks for new events every 1 ms and for progress every 10 ms, busy or not: about 6% of a
core per UI replica with no user at all (measured with /proc on 2 cores), taken from the model replicas
beside it. This queue keeps those intervals while events come in and for a while after, and polls 20x
less often when idle: the first event after a quiet spell waits up to 20 ms longer to start.
"""

from __future__ import annotations

import time
from typing import Any

from gradio import queueing

BUSY_POLL_S = 0.001  # Gradio's own intervals, kept while events come in
BUSY_PROGRESS_S = 0.01
IDLE_POLL_S = 0.02
IDLE_PROGRESS_S = 0.2
STAY_BUSY_S = 2.0  # after the last event ran: a user's next click is often this close


class QuietQueue(queueing.Queue):
    last_busy: float = float("-inf")

    def busy(self) -> bool:
        """An event runs, or one ran within STAY_BUSY_S (the loops call this every turn, so they see it run)."""
        if any(job is not None for job in getattr(self, "active_jobs", ())):
            self.last_busy = time.monotonic()
        return time.monotonic() - self.last_busy < STAY_BUSY_S

    # Gradio's loops read these on every turn; its __init__ sets them, which the setters accept and ignore.
    @property
    def sleep_when_free(self) -> float:
        return BUSY_POLL_S if self.busy() else IDLE_POLL_S

    @sleep_when_free.setter
    def sleep_when_free(self, _: float) -> None:
        pass

    @property
    def progress_update_sleep_when_free(self) -> float:
        return BUSY_PROGRESS_S if self.busy() else IDLE_PROGRESS_S

    @progress_update_sleep_when_free.setter
    def progress_update_sleep_when_free(self, _: float) -> None:
        pass


def quieten(blocks: Any) -> None:
    """Make the queue `blocks.queue()` created a QuietQueue (the same object: Gradio's routes hold it)."""
    blocks._queue.__class__ = QuietQueue
