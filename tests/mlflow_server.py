"""An MLflow tracking server of the test's own, as a cluster runs one: runs and the registry in a
PostgreSQL database, artifacts proxied by the server (clients upload and download them over HTTP, no
shared filesystem); on a free port on 127.0.0.1, stopped by PID."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from backend.local import LOCAL_ENV, free_port

MLFLOW = str(Path(sys.executable).parent / "mlflow")


class MlflowServer:
    def __init__(self, backend_store_uri: str) -> None:
        self.backend_store_uri = backend_store_uri
        self.root = Path(tempfile.mkdtemp(prefix="retriever-mlflow-"))
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 120) -> MlflowServer:
        command = [
            MLFLOW, "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
            "--backend-store-uri", self.backend_store_uri,
            "--serve-artifacts", "--artifacts-destination", str(self.root / "artifacts"),
        ]  # fmt: skip
        with (self.root / "server.log").open("wb") as log:
            self.process = subprocess.Popen(
                command, env={**os.environ, **LOCAL_ENV}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.process.returncode}: {(self.root / 'server.log').read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"mlflow server not up within {timeout_s:.0f} s")
            time.sleep(0.3)

    def stop(self) -> None:
        """SIGTERM to the server's process group (it and its worker), SIGKILL if it lingers."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def __enter__(self) -> MlflowServer:
        return self.start()

    def __exit__(self, *_) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
