"""Every socket the session's app listens on is on loopback, or refuses callers without the cluster's
token. The exception is Ray Serve's own: each replica opens its inter-deployment gRPC server on
`[::]:0` (hard coded in Ray Serve 2.60), guarded by Ray's token authentication, which a new local
cluster turns on by itself. A call to such a port without the token is refused by the interceptor
before the servicer sees the request."""

import os
from pathlib import Path

import grpc
import pytest

from bench.stats import tree_pids

pytestmark = pytest.mark.serve
HANDLE_REQUEST = "/ray.serve.ASGIService/HandleRequest"  # a method every replica's gRPC server has


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def is_ray(pid: int) -> bool:
    """Ray's processes: workers (ray::...), raylet, GCS, and its Python agents."""
    args = cmdline(pid)
    return bool(args) and (args[0].startswith("ray::") or any("/ray/" in arg for arg in args[:2]))


def listening_sockets(pids: list[int]) -> list[tuple[int, str, int]]:
    """(pid, address, port) of every TCP socket these processes listen on, from /proc."""
    listening: dict[str, tuple[str, int]] = {}  # socket inode: (address, port)
    for table, width in (("tcp", 8), ("tcp6", 32)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            address, port = fields[1].split(":")
            raw = bytes.fromhex(address)
            # /proc writes each 32-bit word in host (little-endian) order.
            words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            text = ".".join(map(str, words)) if width == 8 else words.hex(":", 2)
            listening[fields[9]] = (text, int(port, 16))
    found = []
    for pid in pids:
        try:
            links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:
            continue
        for link in links:
            if link.startswith("socket:[") and (inode := link[8:-1]) in listening:
                found.append((pid, *listening[inode]))
    return found


def is_loopback(address: str) -> bool:
    return (
        address.startswith("127.")
        or address in ("0000:0000:0000:0000:0000:0000:0000:0001",)
        or (
            address.startswith("0000:0000:0000:0000:0000:ffff:7f")  # ::ffff:127.x.x.x
        )
    )


def call_replica(port: int, token: str | None) -> grpc.StatusCode:
    metadata = [("authorization", f"Bearer {token}")] if token else []
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(HANDLE_REQUEST, request_serializer=None, response_deserializer=None)
        try:
            call(b"", metadata=metadata, timeout=10)
        except grpc.RpcError as error:
            return error.code()
    return grpc.StatusCode.OK


def test_every_listening_socket_is_loopback_or_refuses_callers_without_the_token(serve_app):
    from ray._raylet import AuthenticationTokenLoader

    app_pids = [pid for pid in tree_pids(os.getpid()) if pid != os.getpid() and is_ray(pid)]
    sockets = listening_sockets(app_pids)
    assert len(sockets) > 10, sockets  # GCS, raylet, agents, proxy, replicas: the scan sees them
    open_beyond_loopback = [(pid, address, port) for pid, address, port in sockets if not is_loopback(address)]
    replicas = {pid for pid in app_pids if cmdline(pid)[0].startswith("ray::ServeReplica")}
    # Only the replicas' own gRPC servers, one each: Api, Summarizer, Vision, Gallery and GradioUI at least.
    assert {pid for pid, _, _ in open_beyond_loopback} == replicas and len(replicas) >= 5, open_beyond_loopback
    token = AuthenticationTokenLoader.instance().get_raw_token()
    assert token, "the cluster runs with Ray's token authentication"
    for pid, address, port in open_beyond_loopback:
        assert address in ("0.0.0.0", "0000:0000:0000:0000:0000:0000:0000:0000")  # all interfaces
        assert call_replica(port, token=None) == grpc.StatusCode.UNAUTHENTICATED, (pid, port)
        assert call_replica(port, token="not-the-token") == grpc.StatusCode.UNAUTHENTICATED, (pid, port)
        # With the token, the same call gets past the guard (to the servicer, which finds it empty).
        assert call_replica(port, token=token) != grpc.StatusCode.UNAUTHENTICATED, (pid, port)
