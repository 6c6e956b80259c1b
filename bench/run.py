"""`python -m bench`: every benchmark (B1-B7) in one run, each figure beside its baseline from the
same run; results in bench/results/ (results.json, results.md, plots).

Order matters on a 2-core machine: the in-process baselines run while no app does, then one app
serves B1-B4 and last the crowd of B7 (load from separate processes; its memory "after load" is read
after the crowd), then the restart floor and the restart (B6), then the abstractive summarizer's app,
then the tutorial's design (B3), each alone. Everything listens and sends on 127.0.0.1 only; every
process started here is stopped by PID.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import typer
import yaml
from rich.console import Console

from backend.deployments.summarizer import SummarizerSettings
from bench.app import App, bench_config, user_config
from bench.report import write_report
from bench.stats import cpu_by_role, memory_by_role
from retriever.local import free_port

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
console = Console(soft_wrap=True)
cli = typer.Typer(add_completion=False)
ALL = ("B1", "B2", "B3", "B4", "B5", "B6", "B7")


def worker(*args: str, timeout_s: float = 1800, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run `python -m bench.<module> ...` as its own process; its last stdout line is the JSON result."""
    done = subprocess.run(
        [PYTHON, "-m", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={**os.environ, **(env or {})},
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def load(
    url: str, scenario: str, concurrency: int = 1, requests: int = 50, max_seconds: float = 120, **options: Any
) -> dict:
    args = [
        "bench.load",
        "--url",
        url,
        "--scenario",
        scenario,
        "--concurrency",
        str(concurrency),
        "--requests",
        str(requests),
        "--max-seconds",
        str(max_seconds),
    ]
    for key, value in options.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    result = worker(*args, timeout_s=max_seconds + 300)
    console.print(
        f"  {scenario} c={concurrency}: p50 {result['latency_ms'].get('p50')} ms, "
        f"{result['throughput_rps']} req/s, statuses {result['statuses']}"
    )
    return result


def parse_pairs(pairs: list[str], what: str) -> dict[str, Any]:
    parsed = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise typer.BadParameter(f"{what} {pair!r}: expected KEY=VALUE")
        parsed[key] = yaml.safe_load(value) if what == "--set" else value
    return parsed


@cli.command()
def main(
    out: Path = typer.Option(ROOT / "bench" / "results", help="Where results.json, results.md and the plots go."),
    only: str = typer.Option(",".join(ALL), help="Benchmarks to run, e.g. B1,B2."),
    requests: int = typer.Option(60, min=5, help="Requests per latency measurement (concurrency 1)."),
    search_sizes: str = typer.Option("10000,100000,1000000", help="B5 gallery sizes."),
    tutorial_requests: int = typer.Option(8, min=1, help="B3: requests to the tutorial's design (~10 s each)."),
    crowd_clients: int = typer.Option(2000, min=1, help="B7: clients sending at the same moment."),
    set_: list[str] = typer.Option(
        [], "--set", help="Serve config change, e.g. api.Vision.user_config.torch_threads=1."
    ),
    env: list[str] = typer.Option([], "--env", help="Environment of the app, e.g. RAY_SERVE_THROUGHPUT_OPTIMIZED=1."),
) -> None:
    wanted = {name.strip().upper() for name in only.split(",")}
    overrides, app_env = parse_pairs(set_, "--set"), parse_pairs(env, "--env")
    work = Path(tempfile.mkdtemp(prefix="retriever-bench-"))
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "settings": {"requests": requests, "overrides": overrides, "env": app_env},
    }
    try:
        run_all(wanted, work, results, requests, search_sizes, tutorial_requests, crowd_clients, overrides, app_env)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    write_report(results, out)
    console.print(f"[green]Results[/] in {out}/results.md")


def run_all(
    wanted,
    work: Path,
    results: dict,
    requests: int,
    search_sizes: str,
    tutorial_requests: int,
    crowd_clients: int,
    overrides: dict,
    app_env: dict,
) -> None:
    t5_dir = work / "t5-small-shaped"
    baselines: dict[str, Any] = results.setdefault("baselines", {})
    console.rule("Baselines (in-process, no serving)")
    # The baselines run the models as the config has the deployments run them (threads, batches).
    config = bench_config(overrides)
    vision, summarizer = user_config(config, "api", "Vision"), user_config(config, "api", "Summarizer")
    vision_threads = ["--threads", str(vision.get("torch_threads", 1))]
    text_threads = ["--threads", str(summarizer.get("threads", summarizer.get("torch_threads", 1)))]
    if wanted & {"B1"}:
        baselines["pipeline"] = worker("bench.baselines", "pipeline", "--requests", str(requests), *vision_threads)
    if wanted & {"B2"}:
        baselines["batched"] = worker(
            "bench.baselines",
            "batched",
            *vision_threads,
            "--batch",
            str(vision.get("max_batch_size", 8)),
            "--passes",
            str(vision.get("concurrent_passes", 1)),
        )
    if wanted & {"B4"}:
        # The app's encoder runtime, and sentence-transformers (the path before ONNX Runtime: P5's baseline),
        # each exporting into a data dir of its own (not the app's: its first start exports for itself).
        text_runs = ["--requests", str(min(requests, 30)), *text_threads]
        text_env = {"RETRIEVER_DATA_DIR": str(work / "baseline-data")}
        runtime = summarizer.get("runtime", SummarizerSettings().runtime)
        baselines["extractive"] = worker(
            "bench.baselines", "extractive", *text_runs, "--runtime", runtime, env=text_env
        )
        baselines["extractive_torch"] = worker(
            "bench.baselines", "extractive", *text_runs, "--runtime", "torch", env=text_env
        )
        worker("bench.baselines", "build-t5", str(t5_dir))
        # Chunked as the seq2seq app below chunks (the Summarizer's default first_chunk_tokens unless --set).
        first_chunk = summarizer.get("first_chunk_tokens", SummarizerSettings().first_chunk_tokens) or 0
        baselines["abstractive"] = worker(
            "bench.baselines",
            "abstractive",
            str(t5_dir),
            "--requests",
            "5",
            *text_threads,
            "--first-chunk-tokens",
            str(first_chunk),
        )
    if wanted & {"B5"}:
        console.print(f"  B5 gallery search at {search_sizes} vectors (minutes at 1M)")
        results["B5"] = worker("bench.baselines", "search", "--sizes", search_sizes, timeout_s=3600)
    console.print(json.dumps(baselines)[:2000])

    from tests.image_server import ImageServer  # real photos on a loopback port, for the URL routes

    with ImageServer() as photos:
        image_url = photos.url + "/photos/dog-on-porch.jpg"
        if wanted & {"B1", "B2", "B3", "B4", "B6", "B7"}:
            console.rule("The app (embedded defaults)")
            app = App(bench_config(overrides), free_port(), work / "data", work, app_env)
            cold = app.start()
            console.print(f"  ready in {cold:.1f} s (first start: registers the packaged model, seeds the gallery)")
            try:
                serve_benchmarks(app, wanted, results, requests, image_url, crowd_clients)
            finally:
                results.setdefault("B6", {})["stop_s"] = round(app.stop(), 1)
            results["B6"]["cold_start_first_run_s"] = round(cold, 1)
        if "B6" in wanted:
            console.rule("Restart floor: one process imports what the app imports and loads both models")
            started = time.perf_counter()
            floor = worker("bench.baselines", "floor", env={"RETRIEVER_DATA_DIR": str(work / "data")})
            results["B6"]["floor"] = {**floor, "total_s": round(time.perf_counter() - started, 1)}
            console.print(f"  floor {results['B6']['floor']}")
            restart = App(bench_config(overrides), free_port(), work / "data", work, app_env)
            console.rule("Restart (same data dir)")
            results["B6"]["cold_start_s"] = round(restart.start(), 1)
            results["B6"]["memory_mib_idle"] = round(restart.memory_mib())
            results["B6"]["memory_idle"] = memory_by_role(restart.processes())
            restart.stop()
        if wanted & {"B4"}:
            console.rule("Abstractive summaries (t5-small-shaped, random weights) through the UI")
            seq2seq = {
                "api.Summarizer.user_config.kind": "seq2seq",
                "api.Summarizer.user_config.model": str(t5_dir),
                "api.Summarizer.user_config.num_beams": 1,
            }
            app = App(bench_config({**overrides, **seq2seq}), free_port(), work / "data", work, app_env)
            app.start()
            try:
                results.setdefault("B4", {})["abstractive_ui"] = load(
                    app.url, "ui-queue-summary", requests=5, max_seconds=300
                )
            finally:
                app.stop()
        if wanted & {"B3"}:
            console.rule("B3: the tutorial's design on the same model")
            results.setdefault("B3", {})["tutorial"] = tutorial_benchmark(work, image_url, tutorial_requests)


def serve_benchmarks(app: App, wanted, results: dict, requests: int, image_url: str, crowd_clients: int = 2000) -> None:
    if "B1" in wanted:
        console.rule("B1: one dog photo at a time")
        results["B1"] = {
            "api": load(app.url, "api-photo", requests=requests),
            "api_explained": load(app.url, "api-photo-explained", requests=requests),
            "api_batch_16": load(app.url, "api-photo-batch", requests=max(10, requests // 4)),
            "ui_rest": load(app.url, "ui-rest-photo", requests=requests),
            "ui_queue": load(app.url, "ui-queue-photo", requests=requests),
        }
    if "B2" in wanted:
        console.rule("B2: throughput vs concurrency")
        results["B2"] = {}
        for c in (1, 4, 16, 32):
            before = app.processes()
            result = load(app.url, "api-photo", concurrency=c, requests=max(60, 12 * c), max_seconds=90)
            # P2: the CPU every app process spent per answered photo, by role (the load generator's not counted).
            answered = max(1, result["ok"])
            result["cpu_ms_per_request"] = {
                role: round(seconds * 1000 / answered, 2)
                for role, seconds in cpu_by_role(before, app.processes()).items()
            }
            results["B2"][str(c)] = result
        console.print(f"  CPU ms per photo at 16: {results['B2']['16']['cpu_ms_per_request']}")
    if "B3" in wanted:
        results.setdefault("B3", {})["ours"] = load(app.url, "api-predict-url", requests=requests, image_url=image_url)
    if "B4" in wanted:
        console.rule("B4: extractive summaries")
        results.setdefault("B4", {})["extractive_api"] = load(app.url, "api-summary", requests=min(requests, 30))
        results["B4"]["extractive_ui"] = load(app.url, "ui-queue-summary", requests=min(requests, 30))
    # P7's "after load": after the photos and summaries above, before the crowd (whose peak B7 records).
    results.setdefault("B6", {})["memory_mib_after_load"] = round(app.memory_mib())
    results["B6"]["memory_after_load"] = memory_by_role(app.processes())
    if "B7" in wanted:
        console.rule(f"B7: a crowd of {crowd_clients:,} clients at once (half photos, half summaries)")
        peak = [app.memory_mib()]
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.wait(0.5):
                peak.append(app.memory_mib())

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            crowd = worker("bench.crowd", "--url", app.url, "--clients", str(crowd_clients), timeout_s=600)
        finally:
            sampling.set()
            sampler.join()
        results["B7"] = {**crowd, "app_peak_mib": round(max(peak))}
        console.print(
            f"  {crowd['statuses']}; accepted p99 {crowd['accepted_ms'].get('p99')} ms, refusals p99 "
            f"{crowd['refusal_ms'].get('p99')} ms, {crowd['answered_per_s']} answered/s, app peak {max(peak):,.0f} MiB"
        )


def tutorial_benchmark(work: Path, image_url: str, requests: int) -> dict:
    embeddings = work / "tutorial-embeddings"
    subprocess.run(
        [PYTHON, "-m", "bench.tutorial", "--embeddings", str(embeddings), "--write-embeddings"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    port = free_port()
    log = (work / "tutorial.log").open("wb")
    server = subprocess.Popen(
        [PYTHON, "-m", "bench.tutorial", "--port", str(port), "--embeddings", str(embeddings)],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"the tutorial app exited; see {log.name}")
            try:
                if httpx.get(url + "/docs", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the tutorial app did not start in 300 s")
            time.sleep(0.5)
        return load(url, "api-predict-url", requests=requests, max_seconds=600, image_url=image_url, warmup=1)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()
