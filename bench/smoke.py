"""Foundation numbers in one run: cold start of `retriever up` to the first summary; latency of one
summary and of one dog photo through the API and through the UI (Gradio's queue); the same photo's
in-process time (decode + model, no serving); and the memory of the running app.

    .venv/bin/python bench/smoke.py [--requests 20] [--port 18080]

Starts its own `retriever up` on a free loopback port and stops it (by PID) at the end. Everything stays
on 127.0.0.1. The full benchmark suite (baselines, ratios, plots) is separate work.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from ui.examples import APOLLO_11  # noqa: E402

PHOTO = ROOT / "backend" / "gallery_seed" / "dog-on-porch.jpg"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


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
    """Proportional set size: shared pages counted once across the processes."""
    total_kib = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total_kib += int(line.split()[1])
        except OSError:
            pass
    return total_kib / 1024


def timed(call, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return times


def summary(times: list[float]) -> dict[str, float]:
    return {"p50": round(statistics.median(times), 1), "p95": round(percentile(times, 0.95), 1)}


def in_process_photo_ms(count: int) -> dict[str, dict[str, float]]:
    """The photo without serving: decode + reduce, and the model's forward pass, with the
    deployment's torch threads (serve_config.yaml: 2)."""
    import torch

    from backend.models.vision import BreedClassifier
    from shared.config import Limits
    from shared.images import decode_image, to_model_input

    torch.set_num_threads(2)
    model = BreedClassifier.packaged()
    data = PHOTO.read_bytes()
    pixels = to_model_input(decode_image(data, Limits()), model.input_spec)
    return {
        "decode_and_reduce_ms": summary(timed(lambda: to_model_input(decode_image(data, Limits()), model.input_spec), count)),
        "model_ms": summary(timed(lambda: model.analyse([pixels]), count)),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--port", type=int, default=18080)
    args = parser.parse_args()
    url = f"http://127.0.0.1:{args.port}"

    started = time.perf_counter()
    app = subprocess.Popen(
        [str(ROOT / ".venv/bin/retriever"), "up", "--port", str(args.port)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        with httpx.Client(base_url=url, timeout=120) as client:
            while True:
                if app.poll() is not None:
                    raise SystemExit(f"retriever up exited with {app.returncode}")
                try:
                    if client.get("/Summarizer", params={"txt": APOLLO_11}).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.25)
            cold_start_s = time.perf_counter() - started

            api_ms = timed(lambda: client.get("/Summarizer", params={"txt": APOLLO_11}).raise_for_status(), args.requests)
            photo = PHOTO.read_bytes()
            api_photo_ms = timed(
                lambda: client.post("/api/v1/photos", files={"file": ("dog.jpg", photo, "image/jpeg")}).raise_for_status(),
                args.requests,
            )

        from gradio_client import Client, handle_file

        ui = Client(url + "/ui/", verbose=False, download_files=False)
        ui_ms = timed(lambda: ui.predict(APOLLO_11, api_name="/summarize"), args.requests)
        ui_photo_ms = timed(lambda: ui.predict(handle_file(str(PHOTO)), "", 6, api_name="/find"), args.requests)
        memory = pss_mib(tree_pids(app.pid))
    finally:
        app.send_signal(signal.SIGTERM)
        app.wait(timeout=120)

    result = {
        "cold_start_to_first_summary_s": round(cold_start_s, 1),
        "api_summary_ms": summary(api_ms),
        "ui_summary_ms": summary(ui_ms),
        "api_photo_ms": summary(api_photo_ms),
        "ui_photo_ms": summary(ui_photo_ms),
        "in_process_photo": in_process_photo_ms(args.requests),
        "app_memory_pss_mib": round(memory),
        "requests": args.requests,
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
