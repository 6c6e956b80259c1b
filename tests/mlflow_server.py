"""An MLflow tracking server of the test's own, as a cluster runs one: runs and the registry in a
PostgreSQL database, artifacts proxied by the server (clients upload and download them over HTTP, no
shared filesystem); on a free port on 127.0.0.1."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx

from retriever.local import LOCAL_ENV, free_port
from tests.server_process import ServerProcess

MLFLOW = str(Path(sys.executable).parent / "mlflow")


class MlflowServer(ServerProcess):
    name = "mlflow"

    def __init__(self, backend_store_uri: str) -> None:
        super().__init__()
        self.backend_store_uri = backend_store_uri

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pick_ports(self) -> None:
        self.port = free_port()

    def command(self) -> list[str]:
        return [
            MLFLOW, "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
            "--backend-store-uri", self.backend_store_uri,
            "--serve-artifacts", "--artifacts-destination", str(self.root / "artifacts"),
        ]  # fmt: skip

    def env(self) -> dict[str, str]:
        return {**os.environ, **LOCAL_ENV}

    def ready(self) -> bool:
        return httpx.get(self.url + "/health", timeout=5).status_code == 200
