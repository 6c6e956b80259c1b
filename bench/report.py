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


# The app's processes that hold a model (torch belongs there and nowhere else).
MODEL_ROLES = ("Vision", "Summarizer")


def rows(results: dict[str, Any]) -> list[Row]:
    """The figures the targets are about, in the order of the issue."""
    found: list[Row] = []

    def add(benchmark, measure, ours, baseline, baseline_name, unit, kind, target, check) -> None:
        row = Row(benchmark, measure, ours, baseline, baseline_name, unit, kind, target, None)
        value = row.comparison if kind != "value" else ours
        row.met = None if value is None else bool(check(value))
        found.append(row)

    reported = ("(reported)", lambda _: True)
    bare = _get(results, "baselines", "pipeline", "latency_ms", "p50")
    api = _get(results, "B1", "api", "latency_ms", "p50")
    add(
        "B1",
        "API p50, one dog photo",
        api,
        bare,
        "bare pipeline p50",
        "ms",
        "ratio",
        "P1: <= 1.25x",
        lambda r: r <= 1.25,
    )
    ui_rest = _get(results, "B1", "ui_rest", "latency_ms", "p50")
    add("B1", "Gradio REST p50", ui_rest, api, "API p50", "ms", "delta", *reported)
    ui_queue = _get(results, "B1", "ui_queue", "latency_ms", "p50")
    add(
        "B1",
        "Gradio queued p50 (as the browser)",
        ui_queue,
        api,
        "API p50",
        "ms",
        "delta",
        "P4: <= API + 15 ms",
        lambda d: d <= 15,
    )
    explained = _get(results, "B1", "api_explained", "latency_ms", "p50")
    add("B1", "API p50 with explain=true (heat map)", explained, api, "API p50", "ms", "delta", *reported)
    batch = _get(results, "B1", "api_batch_16", "latency_ms", "p50")
    add(
        "B1",
        "16 photos in one batch request, p50",
        batch,
        api * 16 if api else None,
        "16 single API calls (16 x API p50)",
        "ms",
        "ratio",
        "issue 22: clearly less (<= 0.7x)",
        lambda r: r <= 0.7,
    )
    for q in ("p95", "p99"):
        ours, base = (
            _get(results, "B1", "api", "latency_ms", q),
            _get(results, "baselines", "pipeline", "latency_ms", q),
        )
        add("B1", f"API {q}", ours, base, f"bare {q}", "ms", "ratio", *reported)
    batched = _get(results, "baselines", "batched", "throughput_ips")
    setup = _get(results, "baselines", "batched") or {}
    batched_name = "bare batched model" + (
        f" ({setup['passes']} x {setup['threads']}-thread passes, batch {setup['batch']})" if "passes" in setup else ""
    )
    for c in ("1", "4", "16", "32"):
        target = ("P2: >= 0.7x", lambda r: r >= 0.7) if c == "16" else reported
        ours = _get(results, "B2", c, "throughput_rps")
        add("B2", f"API throughput, concurrency {c}", ours, batched, batched_name, "req/s", "ratio", *target)
    cpu = _get(results, "B2", "16", "cpu_ms_per_request")
    add(
        "B2",
        "app CPU per photo at concurrency 16 (every process)",
        sum(cpu.values()) if cpu else None,
        _get(results, "baselines", "batched", "cpu_ms_per_image"),
        "the bare forward pass's CPU per image",
        "ms",
        "delta",
        "P2: outside the forward <= 15 ms",
        lambda d: d <= 15,
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
    extractive = _get(results, "baselines", "extractive", "latency_ms", "p50")
    add(
        "B4",
        "extractive summary p50 (API, ~600 words)",
        _get(results, "B4", "extractive_api", "latency_ms", "p50"),
        extractive,
        "in-process p50",
        "ms",
        "delta",
        "P5: <= in-process + 15 ms",
        lambda d: d <= 15,
    )
    same_pick = _get(results, "baselines", "extractive", "summary") == _get(
        results, "baselines", "extractive_torch", "summary"
    )
    add(
        "B4",
        "extractive summary p50 in-process (encoder on ONNX Runtime)",
        extractive,
        _get(results, "baselines", "extractive_torch", "latency_ms", "p50"),
        "sentence-transformers p50",
        "ms",
        "ratio",
        "P5: <= 0.7x, same sentences",
        lambda r: r <= 0.7 and same_pick,
    )
    ours = _get(results, "B4", "extractive_ui", "first_piece_ms", "p50")
    add("B4", "extractive first piece p50 (UI stream)", ours, extractive, "in-process p50", "ms", "delta", *reported)
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
    ours = _get(results, "B4", "abstractive_ui", "latency_ms", "p50")
    base = _get(results, "baselines", "abstractive", "total_ms", "p50")
    add("B4", "abstractive total p50 (UI stream)", ours, base, "in-process total", "ms", "ratio", *reported)
    for size in _get(results, "B5", "sizes") or []:
        n = size["vectors"]
        recall = size["ann_recall_at_k"]
        ann_target = ("P6 (or): recall@10 >= 0.99", lambda _, r=recall: r >= 0.99) if n == 100_000 else reported
        add(
            "B5",
            f"ANN p50 at {n:,} (recall@10 {recall:.3f})",
            size["ann_ms"]["p50"],
            size["exact_ms"]["p50"],
            "exact p50",
            "ms",
            "ratio",
            *ann_target,
        )
        if n == 100_000:
            add(
                "B5",
                "exact p50 at 100,000",
                size["exact_ms"]["p50"],
                _get(size, "matrix_read_ms", "p50"),
                "one read of the matrix (numpy sum)",
                "ms",
                "ratio",
                "P6: <= 1.0x",
                lambda r: r <= 1.0,
            )
    floor = _get(results, "B6", "floor", "total_s")
    add(
        "B6",
        "cold start (restart)",
        _get(results, "B6", "cold_start_s"),
        floor,
        "floor: one process imports and loads both models",
        "s",
        "ratio",
        "P7: <= 2.0x",
        lambda r: r <= 2.0,
    )
    first = _get(results, "B6", "cold_start_first_run_s")
    add(
        "B6", "cold start (first run: registers the model, seeds the gallery)", first, None, "", "s", "value", *reported
    )
    add(
        "B6",
        "whole app resident (PSS) after load",
        _get(results, "B6", "memory_mib_after_load"),
        None,
        "",
        "MiB",
        "value",
        "P7: <= 2.5 GiB (2,560 MiB)",
        lambda v: v <= 2560,
    )
    add(
        "B6",
        "whole app resident (PSS), idle after a restart",
        _get(results, "B6", "memory_mib_idle"),
        None,
        "",
        "MiB",
        "value",
        "P7: <= 2.0 GiB (2,048 MiB)",
        lambda v: v <= 2048,
    )
    memory = _get(results, "B6", "memory_after_load")
    if memory:
        modelless = sum(row["with_torch"] for role, row in memory.items() if role not in MODEL_ROLES)
        add("B6", "processes holding torch but no model", modelless, None, "", "", "value", "P7: 0", lambda v: v == 0)
    crowd = _get(results, "B7")
    if crowd:
        clients = f"{crowd['clients']:,} clients at once"
        accepted, refused = crowd["accepted_ms"].get("p99"), crowd["refusal_ms"].get("p99")
        add("B7", f"{clients}: answers p99", accepted, None, "", "ms", "value", "P8: <= 10 s", lambda v: v <= 10_000)
        add("B7", f"{clients}: refusals (503) p99", refused, None, "", "ms", "value", "P8: <= 1 s", lambda v: v <= 1000)
        wire = crowd.get("refusal_after_sent_ms", {}).get("p99")
        add("B7", f"{clients}: refusals p99 from the request on the wire", wire, None, "", "ms", "value", *reported)
        sent = crowd.get("sent_after_start_ms", {}).get("p99")
        add("B7", f"{clients}: the generator's own delay to the wire p99", sent, None, "", "ms", "value", *reported)
        lost = sum(n for status, n in crowd["statuses"].items() if not (status.startswith("2") or status == "503"))
        add("B7", f"{clients}: neither answered nor refused", lost, None, "", "", "value", "P8: 0", lambda v: v == 0)
        answered = crowd["answered_per_s"]
        add("B7", f"{clients}: answered per second", answered, None, "", "req/s", "value", *reported)
        peak = crowd.get("app_peak_mib")
        add("B7", f"{clients}: app's peak PSS", peak, None, "", "MiB", "value", *reported)
        generator = crowd.get("load_generator_peak_mib")
        add("B7", f"{clients}: load generator's peak RSS", generator, None, "", "MiB", "value", *reported)
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
    cpu = _get(results, "B2", "16", "cpu_ms_per_request")
    if cpu:
        lines += ["", "CPU per answered photo at concurrency 16, by process (ms, from /proc):", ""]
        lines += ["| Process | CPU ms per photo |", "|---|---:|"]
        lines += [f"| {role} | {ms:.1f} |" for role, ms in cpu.items()]
    for key, title in (("memory_after_load", "after load"), ("memory_idle", "idle after a restart")):
        memory = _get(results, "B6", key)
        if memory:
            lines += ["", f"Resident memory (PSS) {title}, by process:", ""]
            lines += ["| Process | PSS MiB | Processes | With torch |", "|---|---:|---:|---:|"]
            lines += [
                f"| {role} | {row['pss_mib']:,.0f} | {row['processes']} | {row['with_torch']} |"
                for role, row in memory.items()
            ]
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
