"""The one shape of every server a test starts (PostgreSQL, MLflow, frps, each Ray node): a process of
the test's own on loopback, in a dir of its own with its log, in a session of its own, stopped by PID.

Ports: a port picked free can be taken by someone else before the server binds it. A first start that
fails that way ("already in use" in its log) picks new ports and starts again; a restart keeps the ports
its clients know."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

START_ATTEMPTS = 3


class ServerProcess:
    """Subclasses say what to run (`command`), when it is up (`ready`), and which ports to pick."""

    name = "server"
    stop_signal = signal.SIGTERM
    stop_timeout_s = 60.0

    def __init__(self, root: Path | None = None, *, ready_timeout_s: float = 120) -> None:
        self._own_root = root is None
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix=f"retriever-{self.name}-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.ready_timeout_s = ready_timeout_s
        self.process: subprocess.Popen[bytes] | None = None
        self._started = False

    # ------------------------------------------------------------------------------ what a server says

    def pick_ports(self) -> None:
        """Choose free ports: before the first start, and again when that start found one taken."""

    def prepare(self) -> None:
        """Once, before the first start (an initdb, a config file)."""

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str] | None:
        return None  # this process's environment

    def ready(self) -> bool:
        raise NotImplementedError

    def after_first_start(self) -> None:
        """Once, when the server first answered (a createdb)."""

    # ------------------------------------------------------------------------------ the shared shape

    @property
    def log_path(self) -> Path:
        return self.root / f"{self.name}.log"

    def log(self, since: int = 0) -> str:
        with self.log_path.open("rb") as log:
            log.seek(since)
            return log.read().decode(errors="replace")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> ServerProcess:
        attempts = 1 if self._started else START_ATTEMPTS
        for attempt in range(1, attempts + 1):
            if not self._started:
                self.pick_ports()
                if attempt == 1:
                    self.prepare()
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            with self.log_path.open("ab") as log:
                self.process = subprocess.Popen(
                    self.command(), env=self.env(), cwd=self.root, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )  # fmt: skip
            if self._wait_until_ready():
                if not self._started:
                    self._started = True
                    self.after_first_start()
                return self
            said = self.log(offset)
            if "already in use" not in said.lower() or attempt == attempts:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{said[-3000:]}")
        raise AssertionError("unreachable")

    def _wait_until_ready(self) -> bool:
        """True once `ready`; False if the process ended first."""
        deadline = time.monotonic() + self.ready_timeout_s
        while True:
            if self.process.poll() is not None:
                return False
            try:
                if self.ready():
                    return True
            except Exception:  # not answering yet
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"{self.name} not ready within {self.ready_timeout_s:.0f} s:\n{self.log()[-3000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        """`stop_signal` to the server's process group, SIGKILL to it if it lingers."""
        if not self.running:
            return
        os.killpg(self.process.pid, self.stop_signal)
        try:
            self.process.wait(timeout=self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def close(self) -> None:
        """Stop, and remove the dir if this object made it."""
        try:
            self.stop()
        finally:
            if self._own_root:
                shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()
