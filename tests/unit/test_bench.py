"""The benchmark harness's own parts: the load generator on a loopback server, its refusal of other
addresses, the config overrides, and the report's ratios against the targets."""

import asyncio
import itertools
from concurrent.futures import ThreadPoolExecutor

import pytest
import typer

from bench.app import bench_config
from bench.load import Target, require_loopback, run_load
from bench.report import markdown, rows
from bench.stats import latency_summary
from tests.image_server import ImageServer


def test_latency_summary_percentiles():
    summary = latency_summary([float(v) for v in range(1, 101)])
    assert summary["n"] == 100 and summary["p50"] == 50.5 and summary["p99"] == pytest.approx(99.01)
    assert latency_summary([]) == {"n": 0}


def test_load_generator_counts_answers_and_failures_on_loopback():
    turns, clients = itertools.count(), set()

    def build(target, client):
        clients.add(id(client))

        async def request():
            response = await client.get(["/photos/dog-on-porch.jpg", "/missing"][next(turns) % 2])
            return response.status_code, None

        return request

    with ImageServer() as server:
        target = Target(server.url, b"", "", None, 5)
        # In a thread of its own: after the browser tests, Playwright's event loop runs in this one.
        with ThreadPoolExecutor(1) as pool:
            result = pool.submit(
                asyncio.run, run_load(build, target, concurrency=4, requests=20, max_seconds=60, warmup=0)
            ).result()
    assert result["sent"] == 20 and result["ok"] == 10
    assert result["statuses"] == {"200": 10, "404": 10}
    assert result["latency_ms"]["n"] == 10 and result["throughput_rps"] > 0
    assert len(clients) == 4  # a client (cookies) per worker, as each browser has its own


@pytest.mark.parametrize("url", ["http://10.0.0.1:8000", "http://example.com", "http://169.254.169.254/"])
def test_load_generator_refuses_anything_but_loopback(url):
    with pytest.raises(typer.BadParameter, match="loopback"):
        require_loopback(url)
    require_loopback("http://127.0.0.1:8000")
    require_loopback("http://[::1]:8000")


def test_bench_config_applies_overrides_and_admits_the_loopback_photo_server():
    config = bench_config({"api.Vision.user_config.torch_threads": 1, "ui.args.concurrency_limit": 16})
    apps = {app["name"]: app for app in config["applications"]}
    vision = next(d for d in apps["api"]["deployments"] if d["name"] == "Vision")
    assert vision["user_config"]["torch_threads"] == 1 and vision["user_config"]["kind"] == "registry"
    assert apps["ui"]["args"]["concurrency_limit"] == 16
    assert apps["api"]["args"]["limits"]["url_allowlist"] == ["127.0.0.1/32"]


def test_report_puts_each_figure_beside_its_baseline_and_judges_the_target():
    results = {
        "started": "now",
        "machine": {"cpus": 2, "platform": "linux"},
        "settings": {},
        "baselines": {
            "pipeline": {"latency_ms": {"p50": 100, "p95": 110, "p99": 120}},
            "batched": {"throughput_ips": 40, "cpu_ms_per_image": 30},
        },
        "B1": {"api": {"latency_ms": {"p50": 130, "p95": 150, "p99": 160}}, "ui_queue": {"latency_ms": {"p50": 140}}},
        "B2": {"16": {"throughput_rps": 30, "cpu_ms_per_request": {"Vision": 33.0, "Api": 10.0, "Serve proxy": 5.0}}},
        "B3": {"ours": {"latency_ms": {"p50": 100}}, "tutorial": {"latency_ms": {"p50": 12000}}},
        "B5": {
            "sizes": [
                {
                    "vectors": 100_000,
                    "exact_ms": {"p50": 20},
                    "matrix_read_ms": {"p50": 25},
                    "ann_ms": {"p50": 2},
                    "ann_recall_at_k": 0.98,
                }
            ]
        },
        "B7": {
            "clients": 2000,
            "statuses": {"200": 60, "503": 1939, "ReadError": 1},
            "accepted_ms": {"p99": 9000},
            "refusal_ms": {"p99": 1500},
            "answered_per_s": 6.0,
            "app_peak_mib": 2900,
        },
        "B6": {
            "cold_start_s": 25.0,
            "floor": {"total_s": 10.0},
            "memory_mib_after_load": 3000,
            "memory_mib_idle": 2000,
            "memory_after_load": {
                "Vision": {"pss_mib": 500, "processes": 1, "with_torch": 1},
                "Api": {"pss_mib": 280, "processes": 1, "with_torch": 1},
            },
        },
    }
    found = {row.measure: row for row in rows(results)}
    api = found["API p50, one dog photo"]
    assert api.comparison == pytest.approx(1.3) and api.met is False
    assert (
        found["Gradio queued p50 (as the browser)"].comparison == 10 and found["Gradio queued p50 (as the browser)"].met
    )
    throughput = found["API throughput, concurrency 16"]
    assert throughput.comparison == pytest.approx(0.75) and throughput.met
    # 48 CPU-ms per photo in all, 30 of them the forward pass: 18 outside it, over P2's 15.
    cpu = found["app CPU per photo at concurrency 16 (every process)"]
    assert cpu.ours == 48 and cpu.comparison == 18 and cpu.met is False
    assert found["POST /predict/ p50"].comparison == 120 and found["POST /predict/ p50"].met
    exact = found["exact p50 at 100,000"]
    assert exact.comparison == pytest.approx(0.8) and exact.met
    assert found["ANN p50 at 100,000 (recall@10 0.980)"].met is False
    restart = found["cold start (restart)"]
    assert restart.comparison == 2.5 and restart.met is False
    assert found["whole app resident (PSS) after load"].met is False  # 3,000 MiB > 2.5 GiB
    assert found["whole app resident (PSS), idle after a restart"].met  # 2,000 MiB <= 2 GiB
    torch_rows = found["processes holding torch but no model"]
    assert torch_rows.ours == 1 and torch_rows.met is False  # the Api's
    assert found["2,000 clients at once: answers p99"].met
    assert found["2,000 clients at once: refusals (503) p99"].met is False
    assert found["2,000 clients at once: neither answered nor refused"].ours == 1
    table = markdown(results)
    assert (
        "| B1 | API p50, one dog photo | 130 ms | 100 ms (bare pipeline p50) | 1.30x | P1: <= 1.25x | **no** |" in table
    )
    assert "120x lower" in table
    assert "| Api | 10.0 |" in table and "| Api | 280 | 1 | 1 |" in table
