"""Latency summaries and process memory, shared by the harness and its worker processes."""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


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
            total_kib += pss_kib(pid)
        except OSError:
            pass  # ended meanwhile
    return total_kib / 1024


def pss_kib(pid: int) -> int:
    """One process's proportional set size, from /proc (OSError once it has ended)."""
    rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    return next((int(line.split()[1]) for line in rollup if line.startswith("Pss:")), 0)


@dataclass(frozen=True)
class ProcessSample:
    """One process of the app at one moment, from /proc."""

    pid: int
    title: str  # its command line's first word (Ray titles its processes: ray::ServeReplica:api:Vision)
    role: str  # what it is to the app: "Vision", "Serve proxy", "Ray" (its own processes), ...
    cpu_s: float  # user + system CPU since it started
    pss_mib: float
    torch: bool  # whether torch's library is loaded in it


def role_of(title: str) -> str:
    """A process of the app by its title: a replica by deployment, Serve's proxy and controller, the rest
    (GCS, raylet, dashboard, agents, `retriever up` itself) as "Ray and the driver"."""
    if title.startswith("ray::ServeReplica:"):
        return title.removeprefix("ray::ServeReplica:").split(":")[1].split(".")[0]  # ...:APP:NAME[.METHOD]
    if title.startswith("ray::ProxyActor"):
        return "Serve proxy"
    if title.startswith("ray::ServeController"):
        return "Serve controller"
    return "Ray and the driver"


def sample_processes(pids: list[int]) -> list[ProcessSample]:
    """CPU time, PSS and whether torch is loaded, for each of `pids` still running."""
    samples = []
    for pid in pids:
        proc = Path(f"/proc/{pid}")
        try:
            title = (proc / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            pss = pss_kib(pid)
            torch = "libtorch_cpu" in (proc / "maps").read_text()
        except OSError:
            continue  # ended meanwhile
        cpu_s = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime
        samples.append(ProcessSample(pid, title, role_of(title), cpu_s, pss / 1024, torch))
    return samples


def cpu_by_role(before: list[ProcessSample], after: list[ProcessSample]) -> dict[str, float]:
    """CPU seconds each role used between two samples (a process that started meanwhile: all of its)."""
    earlier = {s.pid: s.cpu_s for s in before}
    used: dict[str, float] = defaultdict(float)
    for sample in after:
        used[sample.role] += sample.cpu_s - earlier.get(sample.pid, 0.0)
    return dict(sorted(used.items(), key=lambda item: -item[1]))


def memory_by_role(samples: list[ProcessSample]) -> dict[str, dict]:
    """PSS per role (MiB), how many processes, and which of them hold torch (by title)."""
    table: dict[str, dict] = {}
    for sample in sorted(samples, key=lambda s: -s.pss_mib):
        row = table.setdefault(sample.role, {"pss_mib": 0.0, "processes": 0, "with_torch": 0, "torch_in": []})
        row["pss_mib"] = round(row["pss_mib"] + sample.pss_mib, 1)
        row["processes"] += 1
        row["with_torch"] += sample.torch
        row["torch_in"] += [sample.title[:80]] if sample.torch else []
    return table


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of `values`, interpolated as numpy does."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q * 100))
