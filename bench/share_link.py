"""What a share link costs: time to open one, extra latency per request through the tunnel (the same
calls made directly and through the link, in one run), and frpc's memory.

    .venv/bin/python bench/share_link.py [--requests 200] [--summaries 20]

Starts the app on a private Ray cluster (temp data dir) with its UI shared through a self-hosted share
server on loopback (stock frps + Gradio's naming, tests/share_server.py; `.ci/setup --test` installs
frps), and stops everything at the end. Nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# A data dir of its own (registry, gallery), removed at the end, unless one is given.
OWN_DATA_DIR = None if "RETRIEVER_DATA_DIR" in os.environ else tempfile.mkdtemp(prefix="retriever-bench-data-")
if OWN_DATA_DIR:
    os.environ["RETRIEVER_DATA_DIR"] = OWN_DATA_DIR

from retriever.local import apply_local_env  # noqa: E402

apply_local_env()

import httpx  # noqa: E402

from bench.stats import percentile  # noqa: E402
from retriever.cli import _bootstrap_registry, with_ui_settings  # noqa: E402
from retriever.local import driver_handle, free_port, load_serve_config, start_local_serve  # noqa: E402
from tests import netguard  # noqa: E402
from tests.share_server import ShareServer  # noqa: E402
from ui.examples import APOLLO_11  # noqa: E402
from ui.share import ShareLink, ShareSettings  # noqa: E402

netguard.install()  # loopback only, and *.localhost answered here


def timings(call, count: int) -> dict[str, float]:
    seconds = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    return {"p50_ms": round(statistics.median(seconds) * 1000, 1), "p95_ms": round(percentile(seconds, 0.95) * 1000, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200, help="GET /ui/config, each way")
    parser.add_argument("--summaries", type=int, default=20, help="gradio_client summaries, each way")
    args = parser.parse_args()
    from gradio_client import Client

    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as workdir, ShareServer(Path(workdir)) as server:
        config = with_ui_settings(
            load_serve_config(ROOT / "serve_config.yaml"), {"enabled": True, "server": server.address}
        )
        _bootstrap_registry(config)
        running = start_local_serve(config, http_port=free_port())
        try:
            link = driver_handle("GradioUI", "ui").share_link.remote(wait_s=30).result().url
            local = running.url + "/ui/"

            # Opening a link, in-process against the same proxy (the replica's own is already open).
            opened = []
            for _ in range(5):
                started = time.perf_counter()
                extra = ShareLink(
                    ShareSettings(enabled=True, server=server.address), local_port=running.port, path="/ui"
                ).start()
                assert extra.wait(30).state == "ready"
                opened.append(time.perf_counter() - started)
                rss_kib = int(
                    next(
                        line.split()[1]
                        for line in Path(f"/proc/{extra.pid}/status").read_text().splitlines()
                        if line.startswith("VmRSS")
                    )
                )
                extra.close()
            results["open_link_s"] = {"p50": round(statistics.median(opened), 3), "max": round(max(opened), 3)}
            results["frpc_rss_mib"] = round(rss_kib / 1024, 1)

            with httpx.Client(timeout=30) as client:
                for name, base in (("direct", local), ("link", link)):
                    results[f"config_{name}"] = timings(
                        lambda base=base: client.get(base + "config").raise_for_status(), args.requests
                    )
            for name, base in (("direct", local), ("link", link)):
                with closing(Client(base, verbose=False, download_files=False)) as ui:
                    results[f"summary_{name}"] = timings(
                        lambda ui=ui: ui.predict(APOLLO_11, api_name="/summarize"), args.summaries
                    )
        finally:
            running.stop()
            if OWN_DATA_DIR:
                shutil.rmtree(OWN_DATA_DIR, ignore_errors=True)

    print(json.dumps(results, indent=2))
    for what in ("config", "summary"):
        direct, tunnelled = results[f"{what}_direct"]["p50_ms"], results[f"{what}_link"]["p50_ms"]
        ratio, extra = tunnelled / direct, tunnelled - direct
        print(f"{what}: p50 direct {direct} ms, through the link {tunnelled} ms ({ratio:.2f}x, +{extra:.1f} ms)")


if __name__ == "__main__":
    main()
