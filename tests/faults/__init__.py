"""Load and fault tests, each module on an app of its own."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.app import App
from retriever.local import free_port
from tests.conftest import GUARD_ENV


@contextmanager
def own_app(config: dict, workdir: Path) -> Iterator[App]:
    """`retriever up` on `config` (a guarded_config), on a free port with a data dir in `workdir`,
    as a user runs it; stopped by PID afterwards."""
    running = App(config, free_port(), workdir / "data", workdir, env=GUARD_ENV)
    running.start()
    try:
        yield running
    finally:
        running.stop()
