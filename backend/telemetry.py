"""The app's own Prometheus metrics, recorded through Ray's metrics API.

Each Ray node's metrics agent serves them in Prometheus' text format beside Ray's and Serve's own
(`ray_serve_*`: requests per route and status, HTTP latency, batch sizes, replica counts), which they do
not repeat. Prometheus sees every name here with Ray's `ray_` prefix, and every counter with `_total`:
`model_seconds` below is `ray_retriever_model_seconds_bucket`, `photos` is `ray_retriever_photos_total`.
docs/operations.md lists them with the dashboard that reads them.

Metric objects are made on first use, in the process that records (a replica), never at import.
Ray forgets a gauge's value that is not set again within two report intervals (so that a dead worker's
series ends): `hold` sets one and keeps setting it, every second, until it is set again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

from ray.util.metrics import Counter, Gauge, Histogram

# From a 3 ms search to a 60 s summary of a long article on a loaded CPU.
MODEL_SECONDS_BUCKETS = [0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]


@cache
def model_seconds() -> Histogram:
    return Histogram(
        "retriever_model_seconds",
        description="Model time per call: a summary, a Vision forward pass (one batch), a gallery search.",
        boundaries=MODEL_SECONDS_BUCKETS,
        tag_keys=("deployment", "call"),
    )


@cache
def photos() -> Counter:
    return Counter(
        "retriever_photos",
        description="Photos the vision model analysed, by verdict (dog, not_dog).",
        tag_keys=("verdict",),
    )


@cache
def top_breeds() -> Counter:
    return Counter(
        "retriever_top_breeds",
        description="Photos judged dogs, by the breed the model ranked first.",
        tag_keys=("breed",),
    )


@cache
def urls_refused() -> Counter:
    return Counter(
        "retriever_urls_refused",
        description="URLs (images, articles) not fetched or not usable, by reason.",
        tag_keys=("reason",),
    )


@cache
def rejections() -> Counter:
    return Counter(
        "retriever_rejections",
        description="Calls to a model deployment answered 'try again' (HTTP 503, a message in the UI), "
        "by deployment and reason (deadline, queue_full, not_deployed, replica_died, timeout, database_down).",
        tag_keys=("deployment", "reason"),
    )


_held: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[Gauge, float]] = {}
_held_lock = threading.Lock()
HOLD_INTERVAL_S = 1.0


def hold(gauge: Gauge, value: float, tags: dict[str, str] | None = None) -> None:
    """Set a gauge and keep it set (see above)."""
    with _held_lock:
        start = not _held
        _held[(gauge.info["name"], tuple(sorted((tags or {}).items())))] = (gauge, value)
    gauge.set(value, tags=tags)
    if start:
        threading.Thread(target=_keep_held, name="held-gauges", daemon=True).start()


def _keep_held() -> None:
    while True:
        time.sleep(HOLD_INTERVAL_S)
        with _held_lock:
            held = list(_held.items())
        for (_, tags), (gauge, value) in held:
            gauge.set(value, tags=dict(tags) or None)


@cache
def gallery_photos() -> Gauge:
    return Gauge(
        "retriever_gallery_photos",
        description="Photos in a Gallery replica's index (each replica reports its own view).",
        tag_keys=("embedder",),
    )


@cache
def model_info() -> Gauge:
    return Gauge(
        "retriever_model_info",
        description="1 for the model a replica serves (name/version), 0 for one it served before.",
        tag_keys=("deployment", "model"),
    )


@cache
def share_link_up() -> Gauge:
    return Gauge("retriever_share_link_up", description="1 while the UI's public share link is up, else 0.")


@contextmanager
def model_time(deployment: str, call: str) -> Iterator[None]:
    """Times the block into model_seconds (calls that raise are not timed)."""
    started = time.perf_counter()
    yield
    model_seconds().observe(time.perf_counter() - started, tags={"deployment": deployment, "call": call})


def record_model_swap(deployment: str, previous: str | None, current: str) -> None:
    """The info gauge after a (re)load: a swap shows on a graph as one series ending, another starting."""
    if previous and previous != current:
        hold(model_info(), 0, {"deployment": deployment, "model": previous})
    hold(model_info(), 1, {"deployment": deployment, "model": current})


class ModelVersionFilter(logging.Filter):
    """Adds `model` (what the replica serves right now) to its log records: a field of its own in
    Serve's JSON logs, `model=...` at the end of a text line."""

    def __init__(self, current_model) -> None:
        super().__init__()
        self.current_model = current_model  # () -> str | None

    def filter(self, record: logging.LogRecord) -> bool:
        record.model = self.current_model() or "-"
        return True
