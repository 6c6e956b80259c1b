"""Deadline-aware admission: a call to a model deployment is let in only while the calls already in
flight predict an answer within the deadline; past it the caller is refused at once (HTTP 503 with
Retry-After, a message in the UI) instead of waiting behind work that cannot finish in time.

The prediction adds up the work in flight. Each kind of call (a photo, a summary) has a demand: the
seconds of the machine one call takes, learnt from the calls that finished, as each one's latency over
the number of calls that were in flight beside it on average (calls sharing the cores each go at that
fraction of the speed). A new call would be answered after the demands of every call in flight plus its
own. Kinds share one account because they share the cores: summaries in flight slow photos down. At
low load a call's demand is measured alone and overstates what it takes when several run in parallel,
so predictions run long rather than short; below `always_admit` calls of a kind in flight nothing of
that kind is refused. Each face replica keeps its own account (Serve spreads callers over them).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from shared.errors import BackendUnavailable


@dataclass(frozen=True)
class Ticket:
    """One admitted call: its kind, and when it started in time and in calls-in-flight-seconds."""

    kind: str
    started: float
    area: float


class Admission:
    def __init__(
        self,
        deadline_s: float | None,
        names: dict[str, str],
        always_admit: int = 8,
        smoothing: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.deadline_s = deadline_s  # None: every call is admitted (the demands are still learnt)
        self.names = names  # kind -> what users read: {"Vision": "The vision model", ...}
        # A few calls of a kind at once never wait long, and before a kind's first answer there is no
        # demand to go by: below this many in flight nothing of the kind is refused.
        self.always_admit = always_admit
        self.smoothing = smoothing  # each finished call's weight in its kind's demand
        self.clock = clock
        self.in_flight = dict.fromkeys(names, 0)
        self.demand: dict[str, float | None] = dict.fromkeys(names)
        self._area = 0.0  # the integral of calls in flight over time
        self._last = clock()

    def _advance(self) -> float:
        now = self.clock()
        self._area += sum(self.in_flight.values()) * max(0.0, now - self._last)
        self._last = now
        return now

    def predicted_s(self, kind: str) -> float:
        """When one more call of `kind` would be answered: the demands in flight, plus its own."""
        ahead = sum(count * (self.demand[k] or 0.0) for k, count in self.in_flight.items())
        return ahead + (self.demand[kind] or 0.0)

    def admit(self, kind: str) -> Ticket:
        """A place for one call of `kind` (give it back with `release`), or BackendUnavailable (reason
        "deadline") when the work in flight predicts an answer later than the deadline."""
        now = self._advance()
        predicted = self.predicted_s(kind)
        crowded = self.in_flight[kind] >= self.always_admit
        if self.deadline_s is not None and crowded and (self.demand[kind] is None or predicted > self.deadline_s):
            wait = max(1.0, predicted - self.deadline_s)
            raise BackendUnavailable(
                f"{self.names[kind]} is busy: the requests ahead of yours would take about "
                f"{max(predicted, 1):.0f} s; try again in {math.ceil(wait)} s.",
                wait,
                "deadline",
            )
        self.in_flight[kind] += 1
        return Ticket(kind, now, self._area)

    def release(self, ticket: Ticket, answered: bool = True) -> None:
        """An admitted call ended: it made room, and if it was `answered` (or failed: it took its time)
        its latency teaches its kind's demand; a refusal from further in does not."""
        now = self._advance()
        self.in_flight[ticket.kind] -= 1
        latency, area = now - ticket.started, self._area - ticket.area
        if not answered or latency <= 0 or area <= 0:
            return
        demand = latency * latency / area  # latency / the calls in flight on average meanwhile
        previous = self.demand[ticket.kind]
        self.demand[ticket.kind] = demand if previous is None else previous + self.smoothing * (demand - previous)
