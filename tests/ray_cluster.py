"""A multi-node Ray cluster on one machine, as docs/scale-out.md starts one: each node a
`ray start --block` process of its own (head first, then workers joining its address), with its own
ports, temp dir, data dir and custom resources; token authentication on; nothing bound beyond loopback
(each node has its own 127.0.0.x).

`ray start --block` stays in the foreground: this process's child, which shuts its node down on SIGTERM.
Whatever of a node outlives that (Ray workers start sessions of their own) is found as a descendant of
that child and killed by PID. Never `ray stop`: it would end every Ray cluster on the machine."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.stats import tree_pids
from retriever.local import LOCAL_ENV, free_port
from tests.server_process import ServerProcess

HEAD_IP = "127.0.0.2"  # workers: 127.0.0.3, 127.0.0.4, ...
RAY = os.environ.get("RETRIEVER_TEST_RAY") or str(Path(sys.executable).parent / "ray")


class RayNode(ServerProcess):
    """One `ray start --block`: ready once it says "Ray runtime started."."""

    name = "ray-start"

    def __init__(self, cluster: RayCluster, name: str, ip: str, num_cpus: float, resources: dict, head: bool) -> None:
        super().__init__(cluster.root / name, ready_timeout_s=180)
        self.node_name, self.ip, self.cluster, self.head = name, ip, cluster, head
        self.num_cpus, self.resources = num_cpus, resources
        self.pids: list[int] = []  # every process of the node, seen while it ran

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def pick_ports(self) -> None:
        self.ports = {
            option: str(free_port())
            for option in (
                "--node-manager-port", "--object-manager-port", "--metrics-export-port", "--runtime-env-agent-port",
                "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
            )
        }  # fmt: skip
        if self.head:
            self.cluster.gcs_port, self.cluster.dashboard_port = free_port(), free_port()

    def prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        if self.head:
            role = [
                "--head", "--port", str(self.cluster.gcs_port), "--ray-client-server-port", str(free_port()),
                "--include-dashboard", "true",
                "--dashboard-host", "127.0.0.1", "--dashboard-port", str(self.cluster.dashboard_port),
            ]  # fmt: skip
        else:
            role = ["--address", self.cluster.address]
        return [
            RAY, "start", "--block", "--node-ip-address", self.ip, "--temp-dir", str(self.root / "ray"),
            "--num-cpus", str(self.num_cpus), "--resources", json.dumps(self.resources), "--disable-usage-stats",
            *[part for pair in self.ports.items() for part in pair], *role,
        ]  # fmt: skip

    def env(self) -> dict[str, str]:
        return {**self.cluster.env, "RETRIEVER_DATA_DIR": str(self.data_dir)}

    def ready(self) -> bool:
        return "Ray runtime started." in self.log()


class RayCluster:
    """`env`: the cluster settings every node's processes (so every replica) get, e.g. MLFLOW_TRACKING_URI."""

    def __init__(self, env: dict[str, str]) -> None:
        # Short: Ray's socket paths must stay under the OS limit.
        self.root = Path(tempfile.mkdtemp(prefix="rc-", dir="/tmp"))
        self.token = secrets.token_hex(32)
        self.env = {
            **os.environ,
            **LOCAL_ENV,
            **env,
            # LOCAL_ENV's 0 keeps a one-machine cluster on loopback but forbids other nodes. With it 1,
            # Ray swaps 127.0.0.1 given as a node's address for the host's network address: each node
            # here has an address of its own in 127.0.0.0/8 instead (all loopback, like separate hosts).
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1",
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": self.token,
        }
        self.gcs_port = self.dashboard_port = 0  # picked by the head node
        self.nodes: list[RayNode] = []

    @property
    def address(self) -> str:
        return f"{HEAD_IP}:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _start(self, name: str, ip: str, num_cpus: float, resources: dict[str, float], head: bool) -> RayNode:
        node = RayNode(self, name, ip, num_cpus, resources, head)
        self.nodes.append(node)
        return node.start()

    def start_head(self, num_cpus: float, resources: dict[str, float]) -> RayNode:
        return self._start("head", HEAD_IP, num_cpus, resources, head=True)

    def add_worker(self, name: str, num_cpus: float, resources: dict[str, float]) -> RayNode:
        return self._start(name, f"127.0.0.{2 + len(self.nodes)}", num_cpus, resources, head=False)

    @property
    def running(self) -> bool:
        return any(node.running for node in self.nodes)

    def get(self, path: str, timeout_s: float = 10) -> httpx.Response:
        """A dashboard REST call (the State and Serve APIs), with the cluster's token."""
        return httpx.get(
            self.dashboard_url + path, headers={"Authorization": f"Bearer {self.token}"}, timeout=timeout_s
        )

    def alive_nodes(self) -> list[dict]:
        listing = self.get("/api/v0/nodes?limit=100&detail=true").json()
        return [n for n in listing["data"]["result"]["result"] if n["state"] == "ALIVE"]

    def wait_for_nodes(self, count: int, timeout_s: float = 180) -> list[dict]:
        """Until `count` nodes are alive; their State API records (node_id, resources_total, ...)."""
        deadline = time.monotonic() + timeout_s
        while True:
            for node in self.nodes:
                if not node.running:
                    raise RuntimeError(
                        f"ray start for {node.node_name} exited with {node.process.returncode}:\n{node.log()[-3000:]}"
                    )
            try:
                alive = self.alive_nodes()
                if len(alive) >= count:
                    return alive
            except (httpx.HTTPError, KeyError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{count} nodes not alive within {timeout_s:.0f} s")
            self._note_pids()
            time.sleep(0.5)

    def cli(self, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
        """A `ray`/`serve` CLI command against this cluster (with its token)."""
        return subprocess.run(list(args), env=self.env, capture_output=True, text=True, timeout=timeout_s, check=False)

    def _note_pids(self) -> None:
        for node in self.nodes:
            if node.running:
                node.pids = sorted(set(node.pids) | set(tree_pids(node.process.pid)))

    def stop(self) -> list[int]:
        """SIGTERM to every node's `ray start` (workers first), then SIGKILL to whatever of a node is
        still alive after 60 s; the PIDs still alive after that (none, unless something is wrong)."""
        self._note_pids()
        for node in reversed(self.nodes):
            node.stop()
        for node in self.nodes:
            for pid in node.pids:
                _kill_if_still_ours(pid, node.root)
        time.sleep(0.5)
        return [pid for node in self.nodes for pid in node.pids if _is_ours(pid, node.root)]

    def save_logs(self, dest: Path) -> None:
        """Every node's Ray and Serve logs (replicas' included) and its `ray start` output, to `dest`."""
        for node in self.nodes:
            shutil.copytree(
                node.root,
                dest / node.node_name,
                ignore=shutil.ignore_patterns("sockets", "data", "*.sock"),
                dirs_exist_ok=True,
            )

    def __enter__(self) -> RayCluster:
        return self

    def __exit__(self, *_) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _is_ours(pid: int, root: Path) -> bool:
    """Whether `pid` is still a process of the node in `root`: alive and started with that node's
    environment (a PID reused by someone else's process since is left alone)."""
    try:
        return f"RETRIEVER_DATA_DIR={root / 'data'}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


def _kill_if_still_ours(pid: int, root: Path) -> None:
    if _is_ours(pid, root):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
