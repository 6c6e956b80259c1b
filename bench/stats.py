"""Latency summaries and process memory, shared by the harness and its worker processes."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def latency_summary(milliseconds: list[float]) -> dict[str, float]:
    """p50/p95/p99 and mean of per-request latencies (ms); empty input gives an empty summary."""
    if not milliseconds:
        return {"n": 0}
    values = np.asarray(milliseconds, dtype=np.float64)
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {
        "n": len(values),
        "p50": round(float(p50), 2),
        "p95": round(float(p95), 2),
        "p99": round(float(p99), 2),
        "mean": round(float(values.mean()), 2),
    }


def tree_pids(root: int) -> list[int]:
    """`root` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def pss_mib(pids: list[int]) -> float:
    """Proportional set size of the processes together: shared pages (torch's libraries, the Ray
    object store) counted once, so that the sum is what the app really holds."""
    total_kib = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total_kib += int(line.split()[1])
        except OSError:
            pass
    return total_kib / 1024


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of `values`, interpolated as numpy does."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q * 100))
