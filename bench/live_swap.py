"""A live model swap under load, as a user does it: `retriever train --alias champion` while clients
keep sending dog photos to the running app. Reports the requests answered and failed (the goal is 0),
latency before and around the swap, the training's time per epoch and the replica's model load time.

    .venv/bin/python bench/live_swap.py [--clients 2] [--port 18081]

Starts its own `retriever up` on a loopback port with a temp data dir (registry and gallery start empty),
trains on a folder made from the real seed photos (tests/labelled_folder.py), stops everything it
started (by PID) at the end. Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.load import PHOTO  # noqa: E402
from bench.stats import percentile  # noqa: E402
from tests.labelled_folder import build_labelled_folder  # noqa: E402

RETRIEVER = ROOT / ".venv" / "bin" / "retriever"


class Clients:
    """`count` threads posting the photo back to back; every answer as (sent at, status, model, seconds)."""

    def __init__(self, url: str, count: int) -> None:
        self.url, self.answers, self.stopped = url, [], threading.Event()
        self.threads = [threading.Thread(target=self._run) for _ in range(count)]

    def _run(self) -> None:
        photo = PHOTO.read_bytes()
        with httpx.Client(timeout=120) as client:
            while not self.stopped.is_set():
                sent = time.monotonic()
                try:
                    response = client.post(
                        f"{self.url}/api/v1/photos", files={"file": ("dog.jpg", photo, "image/jpeg")}
                    )
                    model = response.json().get("model", "") if response.status_code == 200 else response.text[:200]
                    self.answers.append((sent, response.status_code, model, time.monotonic() - sent))
                except httpx.HTTPError as exc:
                    self.answers.append((sent, 0, repr(exc), time.monotonic() - sent))

    def __enter__(self) -> Clients:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopped.set()
        for thread in self.threads:
            thread.join()


def ms(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "p50": round(statistics.median(values) * 1000),
        "p95": round(percentile(values, 0.95) * 1000),
        "max": round(max(values) * 1000),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--port", type=int, default=18081)
    args = parser.parse_args()
    url = f"http://127.0.0.1:{args.port}"

    with tempfile.TemporaryDirectory(prefix="retriever-bench-") as scratch:
        env = {**os.environ, "RETRIEVER_DATA_DIR": str(Path(scratch) / "data")}
        folder = build_labelled_folder(Path(scratch) / "photos")
        app = subprocess.Popen(
            [str(RETRIEVER), "up", "--port", str(args.port), "--metrics-port", "0", "--dashboard-port", "0"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            while True:
                if app.poll() is not None:
                    raise SystemExit(f"retriever up exited with {app.returncode}")
                try:
                    if httpx.get(f"{url}/api/v1/ready", timeout=10).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.5)
            with Clients(url, args.clients) as clients:
                time.sleep(10)  # a baseline before training starts
                started = time.monotonic()
                train = subprocess.run(
                    [str(RETRIEVER), "train", str(folder), "--alias", "champion"],
                    cwd=ROOT,
                    env=env,
                    capture_output=True,
                    text=True,
                )
                train_s = time.monotonic() - started
                if train.returncode:
                    raise SystemExit(f"retriever train failed:\n{train.stdout[-2000:]}\n{train.stderr[-2000:]}")
                deadline = time.monotonic() + 60
                while (
                    not any(model.endswith("/2") for _, _, model, _ in clients.answers[-5:])
                    and time.monotonic() < deadline
                ):
                    time.sleep(0.2)
                time.sleep(10)  # and after the swap
            ready = httpx.get(f"{url}/api/v1/ready", timeout=30).json()["deployments"]["Vision"]
        finally:
            app.send_signal(signal.SIGTERM)
            app.wait(timeout=120)

    answers = clients.answers
    swapped_at = next((sent for sent, status, model, _ in answers if status == 200 and model.endswith("/2")), None)
    per_epoch = re.search(r"\((\d+) ms per epoch\)", train.stdout)
    load = re.search(r"loaded in ([\d.]+) s", ready.get("detail") or "")
    result = {
        "requests": len(answers),
        "failed": sum(1 for _, status, _, _ in answers if status != 200),
        "answered_by": dict(Counter(model for _, status, model, _ in answers if status == 200)),
        "latency_ms_before_training": ms([s for sent, _, _, s in answers if sent < started]),
        "latency_ms_within_5_s_of_the_swap": ms(
            [s for sent, _, _, s in answers if swapped_at and abs(sent - swapped_at) < 5]
        ),
        "swap_after_training_started_s": round(swapped_at - started, 1) if swapped_at else None,
        "train_wall_s": round(train_s, 1),
        "train_ms_per_epoch": int(per_epoch.group(1)) if per_epoch else None,
        "replica_load_of_the_new_version_s": float(load.group(1)) if load else None,
        "serving": ready.get("model"),
        "clients": args.clients,
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
