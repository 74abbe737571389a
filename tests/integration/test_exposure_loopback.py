"""With ``--host 127.0.0.1``, nothing the server starts listens beyond loopback.

A real ``dask-compute serve`` with a LocalCluster of worker processes (their
nannies too) and a ``processes`` pool; every listening TCP socket of the
server process and all its children is looked at, with the dashboard on and
with it off (the scheduler still serves its HTTP routes then).
"""

from __future__ import annotations

import ipaddress

import psutil
import pytest

from client_sdk import ComputeClient
from tests.helpers import inc, running_server

pytestmark = pytest.mark.integration


def _listening(pid: int) -> dict[tuple[str, int], str]:
    """Every listening TCP socket of ``pid`` and its descendants: ``(ip, port) -> process``."""
    root = psutil.Process(pid)
    found: dict[tuple[str, int], str] = {}
    for process in [root, *root.children(recursive=True)]:
        try:
            sockets = process.net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        for s in sockets:
            if s.status == psutil.CONN_LISTEN:
                found[(s.laddr.ip, s.laddr.port)] = " ".join(process.cmdline()[:4])
    return found


def _loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)  # a dual-stack socket's ::ffff:127.0.0.1
    return (mapped or address).is_loopback


@pytest.mark.parametrize(
    "dashboard, workers",
    [(":0", "--processes"), ("", "--processes"), (":0", "--no-processes")],
    ids=["dashboard-on", "dashboard-off", "thread-workers"],
)
def test_every_listening_socket_is_loopback(tmp_path, dashboard, workers):
    args = [
        "--host",
        "127.0.0.1",
        workers,
        "--n-workers",
        "2",
        "--threads-per-worker",
        "1",
        "--dashboard-address",
        dashboard,
        "--local-processes",
        "1",
    ]
    with running_server(args, tmp_path / "serve.log") as server:
        with ComputeClient(server.target, timeout=60) as client:
            # Use the cluster's workers and the processes pool, so that all of them are up.
            assert client.run("add", 2, 3) == 5
            assert client.submit(inc, 1, scheduler="distributed").result(timeout=60) == 2
            assert client.submit(inc, 2, scheduler="processes").result(timeout=60) == 3
            info = client.info()
        assert len(info.workers) == 2
        sockets = _listening(server.process.pid)
    assert server.port in {port for _, port in sockets}, f"the look sees the gRPC port: {sockets}"
    # The scheduler and its HTTP routes listen too (and, as processes, the workers and nannies).
    assert len(sockets) >= (7 if workers == "--processes" else 3), sockets
    exposed = {address: owner for address, owner in sockets.items() if not _loopback(address[0])}
    assert not exposed, f"listening beyond --host 127.0.0.1: {exposed}"
