"""Refuse, in this process, any socket connection that would leave the machine.

Tests must only talk to loopback. A bug that points a client elsewhere fails the test at `connect`
instead of sending a packet, and a name that would need a DNS server is not looked up. Names under
.localhost resolve to 127.0.0.1 without a DNS query.
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
_LOOPBACK_NAMES = {"localhost", socket.gethostname().lower()}  # both in /etc/hosts: no DNS query


def _getaddrinfo(host, *args, **kwargs):
    """Resolves only what needs no DNS server: IP literals, localhost and this machine's own name;
    *.localhost is loopback (RFC 6761; Chromium and curl know it, Python's resolver does not) and is
    answered here. Any other name is refused before a query could leave the machine (Ray's dashboard
    looks up metadata.google.internal and usage-stats.ray.io, usage stats disabled or not)."""
    name = host.decode() if isinstance(host, bytes) else host
    if isinstance(name, str):
        bare = name.split("%")[0].rstrip(".").lower()
        if bare.endswith(".localhost"):
            host = "127.0.0.1"
        elif bare not in _LOOPBACK_NAMES and not _is_ip_literal(bare):
            raise socket.gaierror(socket.EAI_NONAME, f"{name!r} not looked up: tests resolve only loopback names")
    return _original_getaddrinfo(host, *args, **kwargs)


def _is_ip_literal(text: str) -> bool:
    """An address the resolver reads without a query: IPv4/IPv6 text, or inet_aton's older spellings
    (2130706433, 0x7f.1, 127.1), which the app's URL checks must see as the addresses they are."""
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        try:
            socket.inet_aton(text)
        except OSError:
            return False
    return True


def install() -> None:
    socket.socket.connect = _guarded_connect
    socket.socket.connect_ex = _guarded_connect_ex
    socket.getaddrinfo = _getaddrinfo
