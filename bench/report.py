"""Results as JSON, a Markdown table (each figure beside its baseline, as a ratio, against its target)
and PNG plots."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Row:
    benchmark: str
    measure: str
    ours: float | None
    baseline: float | None
    baseline_name: str
    unit: str
    kind: str  # "ratio" (ours / baseline), "inverse" (baseline / ours), "delta" (ours - baseline), "value"
    target: str
    met: bool | None

    @property
    def comparison(self) -> float | None:
        if self.ours is None or (self.kind != "value" and self.baseline is None):
            return None
        if self.kind == "ratio":
            return self.ours / self.baseline
        if self.kind == "inverse":
            return self.baseline / self.ours
        if self.kind == "delta":
            return self.ours - self.baseline
        return None


def _get(data: dict, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def rows(results: dict[str, Any]) -> list[Row]:
    """The figures the targets are about, in the order of the issue."""
    found: list[Row] = []

    def add(benchmark, measure, ours, baseline, baseline_name, unit, kind, target, check) -> None:
        row = Row(benchmark, measure, ours, baseline, baseline_name, unit, kind, target, None)
        value = row.comparison if kind != "value" else ours
        row.met = None if value is None else bool(check(value))
        found.append(row)

    bare = _get(results, "baselines", "pipeline", "latency_ms", "p50")
    api = _get(results, "B1", "api", "latency_ms", "p50")
    add("B1", "API p50, one dog photo", api, bare, "bare pipeline p50", "ms", "ratio", "<= 1.25x", lambda r: r <= 1.25)
    for name, label in (("ui_rest", "Gradio REST"), ("ui_queue", "Gradio queued")):
        add(
            "B1",
            f"{label} p50",
            _get(results, "B1", name, "latency_ms", "p50"),
            api,
            "API p50",
            "ms",
            "delta",
            "<= API + 15 ms",
            lambda d: d <= 15,
        )
    for q in ("p95", "p99"):
        add(
            "B1",
            f"API {q}",
            _get(results, "B1", "api", "latency_ms", q),
            _get(results, "baselines", "pipeline", "latency_ms", q),
            f"bare {q}",
            "ms",
            "ratio",
            "(reported)",
            lambda r: True,
        )
    batched = _get(results, "baselines", "batched", "throughput_ips")
    setup = _get(results, "baselines", "batched") or {}
    batched_name = "bare batched model" + (
        f" ({setup['passes']} x {setup['threads']}-thread passes, batch {setup['batch']})" if "passes" in setup else ""
    )
    for c in ("1", "4", "16", "32"):
        add(
            "B2",
            f"API throughput, concurrency {c}",
            _get(results, "B2", c, "throughput_rps"),
            batched,
            batched_name,
            "req/s",
            "ratio",
            ">= 0.9x at 16" if c == "16" else "(reported)",
            (lambda r: r >= 0.9) if c == "16" else (lambda r: True),
        )
    add(
        "B3",
        "POST /predict/ p50",
        _get(results, "B3", "ours", "latency_ms", "p50"),
        _get(results, "B3", "tutorial", "latency_ms", "p50"),
        "tutorial's design p50",
        "ms",
        "inverse",
        ">= 100x lower",
        lambda r: r >= 100,
    )
    add(
        "B4",
        "extractive summary p50 (API, ~600 words)",
        _get(results, "B4", "extractive_api", "latency_ms", "p50"),
        _get(results, "baselines", "extractive", "latency_ms", "p50"),
        "in-process p50",
        "ms",
        "ratio",
        "<= 300 ms",
        lambda r: _get(results, "B4", "extractive_api", "latency_ms", "p50") <= 300,
    )
    add(
        "B4",
        "extractive first piece p50 (UI stream)",
        _get(results, "B4", "extractive_ui", "first_piece_ms", "p50"),
        _get(results, "baselines", "extractive", "latency_ms", "p50"),
        "in-process p50",
        "ms",
        "ratio",
        "<= 300 ms",
        lambda r: _get(results, "B4", "extractive_ui", "first_piece_ms", "p50") <= 300,
    )
    add(
        "B4",
        "abstractive first token p50 (UI stream)",
        _get(results, "B4", "abstractive_ui", "first_piece_ms", "p50"),
        _get(results, "baselines", "abstractive", "first_piece_ms", "p50"),
        "in-process first token",
        "ms",
        "ratio",
        "<= 300 ms",
        lambda r: _get(results, "B4", "abstractive_ui", "first_piece_ms", "p50") <= 300,
    )
    add(
        "B4",
        "abstractive total p50 (UI stream)",
        _get(results, "B4", "abstractive_ui", "latency_ms", "p50"),
        _get(results, "baselines", "abstractive", "total_ms", "p50"),
        "in-process total",
        "ms",
        "ratio",
        "(reported)",
        lambda r: True,
    )
    for size in _get(results, "B5", "sizes") or []:
        n = size["vectors"]
        add(
            "B5",
            f"ANN p50 at {n:,} (recall@10 {size['ann_recall_at_k']:.3f})",
            size["ann_ms"]["p50"],
            size["exact_ms"]["p50"],
            "exact p50",
            "ms",
            "ratio",
            "<= 5 ms, recall >= 0.95" if n == 1_000_000 else "(reported)",
            (lambda r, s=size: s["ann_ms"]["p50"] <= 5 and s["ann_recall_at_k"] >= 0.95)
            if n == 1_000_000
            else (lambda r: True),
        )
        if n == 100_000:
            add(
                "B5",
                "exact p50 at 100,000",
                size["exact_ms"]["p50"],
                None,
                "",
                "ms",
                "value",
                "<= 15 ms",
                lambda v: v <= 15,
            )
    add(
        "B6",
        "cold start (restart)",
        _get(results, "B6", "cold_start_s"),
        None,
        "",
        "s",
        "value",
        "<= 30 s",
        lambda v: v <= 30,
    )
    add(
        "B6",
        "cold start (first run: registers the model, seeds the gallery)",
        _get(results, "B6", "cold_start_first_run_s"),
        None,
        "",
        "s",
        "value",
        "(reported)",
        lambda v: True,
    )
    gb = 1e9 / 2**20
    add(
        "B6",
        "whole app resident (PSS), idle after a restart",
        _get(results, "B6", "memory_mib_idle"),
        None,
        "",
        "MiB",
        "value",
        "(reported)",
        lambda v: True,
    )
    add(
        "B6",
        "whole app resident (PSS) after load",
        _get(results, "B6", "memory_mib_after_load"),
        None,
        "",
        "MiB",
        "value",
        f"<= 3 GB ({gb * 3:.0f} MiB)",
        lambda v: v <= 3 * gb,
    )
    return [row for row in found if row.ours is not None]


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.1f}" if abs(value) >= 10 else f"{value:,.2f}"


def markdown(results: dict[str, Any]) -> str:
    lines = [
        f"# Benchmark results ({results.get('started', '')})",
        "",
        f"Machine: {results['machine']['cpus']} CPUs, {results['machine']['platform']}. "
        f"Settings: {json.dumps(results['settings'])}. `python -m bench` wrote this; raw figures in results.json.",
        "",
        "| | Measure | Ours | Baseline (same run) | Comparison | Target | Met |",
        "|---|---|---:|---|---:|---|:-:|",
    ]
    for row in rows(results):
        comparison = row.comparison
        if row.kind == "ratio":
            shown = f"{comparison:.2f}x" if comparison is not None else ""
        elif row.kind == "inverse":
            shown = f"{comparison:,.0f}x lower" if comparison is not None else ""
        elif row.kind == "delta":
            shown = f"{comparison:+.1f} {row.unit}" if comparison is not None else ""
        else:
            shown = ""
        baseline = f"{_fmt(row.baseline)} {row.unit} ({row.baseline_name})" if row.baseline is not None else ""
        met = "" if row.met is None or row.target == "(reported)" else ("yes" if row.met else "**no**")
        ours = f"{_fmt(row.ours)} {row.unit}"
        lines.append(f"| {row.benchmark} | {row.measure} | {ours} | {baseline} | {shown} | {row.target} | {met} |")
    lines += [
        "",
        "![latency percentiles](b1_latency.png)",
        "",
        "![throughput vs concurrency](b2_throughput.png)",
        "",
        "![gallery search](b5_search.png)",
        "",
    ]
    return "\n".join(lines)


def plots(results: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    b1 = {
        "bare pipeline": _get(results, "baselines", "pipeline", "latency_ms"),
        "API": _get(results, "B1", "api", "latency_ms"),
        "Gradio REST": _get(results, "B1", "ui_rest", "latency_ms"),
        "Gradio queued": _get(results, "B1", "ui_queue", "latency_ms"),
    }
    b1 = {name: value for name, value in b1.items() if value and value.get("n")}
    if b1:
        fig, ax = plt.subplots(figsize=(7, 4))
        width = 0.25
        for i, q in enumerate(("p50", "p95", "p99")):
            ax.bar([x + (i - 1) * width for x in range(len(b1))], [v[q] for v in b1.values()], width, label=q)
        ax.set_xticks(range(len(b1)), list(b1))
        ax.set_ylabel("ms per dog photo (concurrency 1)")
        ax.set_title("B1: latency percentiles")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "b1_latency.png", dpi=110)
        plt.close(fig)
    b2 = _get(results, "B2")
    if b2:
        levels = sorted(b2, key=int)
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot([int(c) for c in levels], [b2[c]["throughput_rps"] for c in levels], "o-", label="API (dog photos)")
        batched = _get(results, "baselines", "batched", "throughput_ips")
        if batched:
            ax.axhline(batched, color="grey", linestyle="--", label="bare batched model")
        ax.set_xscale("log", base=2)
        ax.set_xticks([int(c) for c in levels], levels)
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel("requests / s")
        ax.set_ylim(bottom=0)
        ax.set_title("B2: throughput vs concurrency")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "b2_throughput.png", dpi=110)
        plt.close(fig)
    sizes = _get(results, "B5", "sizes")
    if sizes:
        fig, ax = plt.subplots(figsize=(7, 4))
        counts = [s["vectors"] for s in sizes]
        ax.plot(counts, [s["exact_ms"]["p50"] for s in sizes], "o-", label="exact p50")
        ax.plot(counts, [s["ann_ms"]["p50"] for s in sizes], "o-", label="ANN (FAISS IVF) p50")
        for s in sizes:
            ax.annotate(
                f"recall {s['ann_recall_at_k']:.2f}",
                (s["vectors"], s["ann_ms"]["p50"]),
                textcoords="offset points",
                xytext=(4, -12),
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("vectors in the gallery (1280-d)")
        ax.set_ylabel("ms per query")
        ax.set_title("B5: gallery search")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "b5_search.png", dpi=110)
        plt.close(fig)


def write_report(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    results["summary"] = [
        {
            "benchmark": r.benchmark,
            "measure": r.measure,
            "ours": r.ours,
            "baseline": r.baseline,
            "baseline_name": r.baseline_name,
            "unit": r.unit,
            "comparison": r.comparison,
            "kind": r.kind,
            "target": r.target,
            "met": r.met,
        }
        for r in rows(results)
    ]
    (out / "results.json").write_text(json.dumps(results, indent=2))
    plots(results, out)
    (out / "results.md").write_text(markdown(results))
