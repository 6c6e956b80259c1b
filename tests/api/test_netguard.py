"""The loopback-only guard itself: a connection that would leave the machine fails at `connect`, in this
process and in an async Ray actor set up like the app's replicas (same runtime_env). The address tried
is TEST-NET-1 (192.0.2.1, for documentation); each check first makes sure the guard is in place, so that
a broken guard fails the test instead of sending a packet."""

import asyncio
import ipaddress
import socket

import pytest

from shared.config import Limits
from shared.errors import UnreachableUrl
from shared.images import fetch_image_bytes
from tests import netguard

pytestmark = pytest.mark.serve
OFF_MACHINE = "192.0.2.1"
ADMITTED = Limits(url_allowlist=[f"{OFF_MACHINE}/32"])  # past the app's own check: only the guard is left


def exception_chain(exc: BaseException | None) -> list[str]:
    names = []
    while exc is not None:
        names.append(type(exc).__name__)
        exc = exc.__cause__ or exc.__context__
    return names


def test_this_process_refuses_off_machine_connections():
    assert socket.socket.connect is netguard._guarded_connect
    with pytest.raises(netguard.OffMachineConnection):
        socket.create_connection((OFF_MACHINE, 80), timeout=1)
    with pytest.raises(UnreachableUrl) as refused:
        asyncio.run(fetch_image_bytes(f"http://{OFF_MACHINE}/dog.jpg", ADMITTED))
    assert "OffMachineConnection" in exception_chain(refused.value)


def test_names_that_need_a_dns_server_are_not_looked_up():
    assert socket.getaddrinfo is netguard._getaddrinfo
    for name in ("metadata.google.internal", "usage-stats.ray.io", b"example.org"):  # what Ray's dashboard tries
        with pytest.raises(socket.gaierror, match="tests resolve only loopback names"):
            socket.getaddrinfo(name, 80)
    for name in ("localhost", "127.0.0.1", "2130706433", "::1", "dog.localhost", socket.gethostname(), None):
        assert all(ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(name, 80))


def test_an_actor_set_up_like_the_replicas_refuses_them(serve_deployment):
    import ray

    _, config = serve_deployment
    api = next(app for app in config["applications"] if app["name"] == "api")

    @ray.remote(num_cpus=0, runtime_env=api["runtime_env"])
    class Fetcher:
        async def fetch(self) -> dict:
            import asyncio
            import socket

            from shared.images import fetch_image_bytes
            from tests import netguard

            loop = type(asyncio.get_running_loop()).__module__
            guarded = socket.socket.connect is netguard._guarded_connect
            if not guarded or not loop.startswith("asyncio"):  # a connect would not be seen: do not try
                return {"loop": loop, "guarded": guarded, "chain": []}
            try:
                await fetch_image_bytes(f"http://{OFF_MACHINE}/dog.jpg", ADMITTED)
            except Exception as exc:
                return {"loop": loop, "guarded": guarded, "chain": exception_chain(exc)}
            return {"loop": loop, "guarded": guarded, "chain": ["fetched?!"]}

    fetcher = Fetcher.remote()
    try:
        seen = ray.get(fetcher.fetch.remote(), timeout=120)
    finally:
        ray.kill(fetcher)
    assert seen["loop"].startswith("asyncio") and seen["guarded"], seen
    assert seen["chain"][0] == "UnreachableUrl" and "OffMachineConnection" in seen["chain"], seen
