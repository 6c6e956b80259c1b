"""Refuse, in this process, any socket connection that would leave the machine.

Tests must only talk to loopback. A bug that points a client elsewhere fails the test at `connect`
instead of sending a packet. Names under .localhost resolve to 127.0.0.1 without a DNS query.
"""

from __future__ import annotations

import ipaddress
import socket

_original_connect = socket.socket.connect
_original_connect_ex = socket.socket.connect_ex


class OffMachineConnection(ConnectionRefusedError):
    pass


def _check(sock: socket.socket, address) -> None:
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return  # unix sockets stay on the machine
    host = address[0]
    try:
        loopback = ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        loopback = host == "localhost" or host.endswith(".localhost")
    if not loopback:
        raise OffMachineConnection(f"test process tried to connect to {address!r}: only loopback is allowed")


def _guarded_connect(self, address):
    _check(self, address)
    return _original_connect(self, address)


def _guarded_connect_ex(self, address):
    _check(self, address)
    return _original_connect_ex(self, address)


_original_getaddrinfo = socket.getaddrinfo


def _getaddrinfo(host, *args, **kwargs):
    # *.localhost is loopback (RFC 6761; Chromium and curl know it, Python's resolver does not):
    # answered here, so the name never reaches a DNS server. Share links on a test server use it.
    if isinstance(host, (str, bytes)) and (host.decode() if isinstance(host, bytes) else host).rstrip(".").endswith(".localhost"):
        host = "127.0.0.1"
    return _original_getaddrinfo(host, *args, **kwargs)


def install() -> None:
    socket.socket.connect = _guarded_connect
    socket.socket.connect_ex = _guarded_connect_ex
    socket.getaddrinfo = _getaddrinfo
