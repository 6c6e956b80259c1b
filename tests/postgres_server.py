"""A PostgreSQL server of the test's own: Debian's binaries, a cluster in a temp dir, a free port on
127.0.0.1, no unix socket elsewhere; restartable mid-test (on the same port).

PostgreSQL refuses to run as root: under root (CI) every server command runs as the `postgres` user that
Debian's package creates, in a dir that user owns."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess

from retriever.local import free_port
from tests.server_process import ServerProcess


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise FileNotFoundError(f"PostgreSQL's {name} not found: apt-get install postgresql (.ci/setup --test does)")
    return found[-1]


class PostgresServer(ServerProcess):
    name = "postgres"
    stop_signal = signal.SIGINT  # PostgreSQL's "fast" shutdown: ends sessions, then a clean checkpoint

    def __init__(self) -> None:
        super().__init__()
        self.data = self.root / "data"
        self.database = "retriever"
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as:
            shutil.chown(self.root, "postgres", "postgres")

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of the test database (psycopg 3); trust auth on loopback only."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{self.database}"

    def _run(self, *command: str) -> None:
        subprocess.run([*self._as, *command], check=True, capture_output=True, timeout=120)

    def pick_ports(self) -> None:
        self.port = free_port()

    def prepare(self) -> None:
        self._run(_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync")

    def command(self) -> list[str]:
        return [
            *self._as, _bin("postgres"), "-D", str(self.data), "-c", "listen_addresses=127.0.0.1",
            "-c", f"port={self.port}", "-c", f"unix_socket_directories={self.root}", "-c", "fsync=on",
        ]  # fmt: skip

    def ready(self) -> bool:
        checked = subprocess.run(
            [_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"], capture_output=True
        )
        return checked.returncode == 0

    def after_first_start(self) -> None:
        self.new_database(self.database)

    def new_database(self, name: str) -> str:
        """Create another (empty) database on this server; its SQLAlchemy URL."""
        self._run(_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"
