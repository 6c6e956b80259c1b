"""A Prometheus server of the test's own (Debian's `prometheus`, installed by `.ci/setup --test`): a temp
dir for its config and data, a free port on 127.0.0.1, scraping every second the targets Ray's
service-discovery file names (as docs/operations.md has an operator set it up)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import yaml

from retriever.local import free_port
from tests.server_process import ServerProcess

PROMETHEUS = "/usr/bin/prometheus"


class PrometheusServer(ServerProcess):
    name = "prometheus"

    def __init__(self, service_discovery_file: Path) -> None:
        super().__init__()
        self.service_discovery_file = service_discovery_file

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pick_ports(self) -> None:
        self.port = free_port()

    def prepare(self) -> None:
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "ray", "file_sd_configs": [{"files": [str(self.service_discovery_file)]}]}],
        }
        (self.root / "prometheus.yml").write_text(yaml.safe_dump(config))

    def command(self) -> list[str]:
        return [
            PROMETHEUS, f"--config.file={self.root / 'prometheus.yml'}", f"--storage.tsdb.path={self.root / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-lifecycle",
        ]  # fmt: skip

    def ready(self) -> bool:
        return httpx.get(self.url + "/-/ready", timeout=5).status_code == 200

    def query(self, promql: str) -> list[dict]:
        """An instant query's result vector; an error is raised with Prometheus' message."""
        answer = httpx.get(self.url + "/api/v1/query", params={"query": promql}, timeout=30).json()
        if answer["status"] != "success":
            raise ValueError(f"{promql}: {answer.get('errorType')}: {answer.get('error')}")
        return answer["data"]["result"]

    def value(self, promql: str) -> float:
        """The single number a query answers (0 when it answers nothing)."""
        result = self.query(promql)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else 0.0

    def wait_for(self, promql: str, expected: float, timeout_s: float = 60) -> float:
        """Until the query answers `expected` (samples reach Prometheus a few seconds late); the last
        answer, which differs from `expected` only if it never came."""
        deadline = time.monotonic() + timeout_s
        while True:
            seen = self.value(promql)
            if seen == expected or time.monotonic() > deadline:
                return seen
            time.sleep(0.5)

    def wait_for_targets(self, timeout_s: float = 60) -> list[dict]:
        """Until every target of the discovery file is scraped healthily."""
        deadline = time.monotonic() + timeout_s
        while True:
            targets = httpx.get(self.url + "/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
            if targets and all(t["health"] == "up" for t in targets):
                return targets
            if time.monotonic() > deadline:
                raise TimeoutError(f"targets not all up: {[(t['scrapeUrl'], t['health']) for t in targets]}")
            time.sleep(0.5)
