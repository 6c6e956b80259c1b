"""Deadline-aware admission (backend/admission.py) on a clock the test moves."""

import pytest

from backend.admission import Admission
from shared.errors import BackendUnavailable

NAMES = {"Vision": "The vision model", "Summarizer": "The summarizer"}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def serve_alone(admission: Admission, clock: Clock, kind: str, calls: int, seconds_each: float) -> None:
    for _ in range(calls):
        ticket = admission.admit(kind)
        clock.now += seconds_each
        admission.release(ticket)


def test_calls_are_refused_once_the_work_in_flight_would_answer_past_the_deadline():
    clock = Clock()
    admission = Admission(deadline_s=10, names=NAMES, always_admit=4, clock=clock)
    serve_alone(admission, clock, "Vision", calls=3, seconds_each=0.5)
    assert admission.demand["Vision"] == pytest.approx(0.5)
    # 19 photos in flight: the 20th is answered after 20 x 0.5 = 10 s, within the deadline; a 21st is not.
    tickets = [admission.admit("Vision") for _ in range(20)]
    with pytest.raises(BackendUnavailable) as refused:
        admission.admit("Vision")
    assert refused.value.reason == "deadline" and refused.value.retry_after_s >= 1
    assert "The vision model is busy" in str(refused.value) and "try again in 1 s" in str(refused.value)
    assert admission.in_flight["Vision"] == 20
    clock.now += 10.0
    for ticket in tickets[:4]:  # as calls finish there is room again
        admission.release(ticket)
    admission.admit("Vision")
    assert admission.in_flight["Vision"] == 17


def test_a_call_that_shared_the_cores_teaches_its_share_not_its_latency():
    clock = Clock()
    admission = Admission(deadline_s=10, names=NAMES, smoothing=1.0, clock=clock)
    first, second = admission.admit("Vision"), admission.admit("Vision")
    clock.now += 1.0  # two at once, each done in 1 s: each took half a second of the machine
    admission.release(first)
    assert admission.demand["Vision"] == pytest.approx(0.5)
    admission.release(second)


def test_summaries_in_flight_count_against_photos():
    clock = Clock()
    admission = Admission(deadline_s=10, names=NAMES, always_admit=1, clock=clock)
    serve_alone(admission, clock, "Vision", calls=1, seconds_each=0.1)
    serve_alone(admission, clock, "Summarizer", calls=1, seconds_each=3.0)
    for _ in range(3):
        admission.admit("Summarizer")  # 9 s of summaries ahead
    assert admission.predicted_s("Vision") == pytest.approx(9.1)
    for _ in range(10):
        admission.admit("Vision")
    with pytest.raises(BackendUnavailable, match="The vision model is busy"):
        admission.admit("Vision")  # 9 s + 10 x 0.1 s + its own 0.1 s: past 10 s


def test_a_few_calls_are_always_admitted_and_none_beyond_them_before_the_first_answer():
    clock = Clock()
    admission = Admission(deadline_s=10, names=NAMES, always_admit=3, clock=clock)
    tickets = [admission.admit("Summarizer") for _ in range(3)]  # nothing learnt yet: the first few go in
    with pytest.raises(BackendUnavailable, match="The summarizer is busy"):
        admission.admit("Summarizer")
    admission.admit("Vision")  # another kind has its own few
    clock.now += 1.0
    admission.release(tickets[0])
    admission.admit("Summarizer")
    assert admission.in_flight == {"Vision": 1, "Summarizer": 3}


def test_refusals_from_further_in_teach_nothing_and_no_deadline_admits_all():
    clock = Clock()
    admission = Admission(deadline_s=None, names=NAMES, always_admit=1, clock=clock)
    ticket = admission.admit("Vision")
    clock.now += 0.001
    admission.release(ticket, answered=False)  # a 503 from the Api: says nothing of how long photos take
    assert admission.demand["Vision"] is None
    serve_alone(admission, clock, "Vision", calls=3, seconds_each=10.0)
    for _ in range(50):
        admission.admit("Vision")
    assert admission.in_flight["Vision"] == 50
