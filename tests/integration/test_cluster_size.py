"""The server keeps its own LocalCluster at its size: workers Dask gave up on are started again."""

from __future__ import annotations

import os
import signal

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client_sdk import ComputeClient
from tests.helpers import running_server, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SIZE_HEALTH = "dask-compute.cluster-size"


def _worker_pids(server_pid: int, client: ComputeClient) -> list[int]:
    """The server's children that listen on a Dask worker's port."""
    ports = {int(w.address.rsplit(":", 1)[1]) for w in client.info().workers}
    found = []
    for child in psutil.Process(server_pid).children(recursive=True):
        try:
            listening = {c.laddr.port for c in child.net_connections("tcp") if c.status == "LISTEN"}
        except psutil.Error:
            continue
        if listening & ports:
            found.append(child.pid)
    return found


def _size_health(target: str) -> int:
    with grpc.insecure_channel(target) as channel:
        request = health_pb2.HealthCheckRequest(service=SIZE_HEALTH)
        return health_pb2_grpc.HealthStub(channel).Check(request, timeout=10).status


def test_a_worker_dask_gave_up_on_is_started_again_and_the_health_says_meanwhile(tmp_path):
    # Dask's own setting: a lost worker not back within 0.1 s has its nanny closed
    # for good (as happens in a soak, when a worker dies again while it restarts).
    env = {"DASK_DISTRIBUTED__DEPLOY__LOST_WORKER_TIMEOUT": "0.1s"}
    args = ["--n-workers", "2", "--threads-per-worker", "1", "--processes"]
    with (
        running_server(args, tmp_path / "server.log", env=env) as server,
        ComputeClient(server.target, timeout=60) as client,
    ):
        info = wait_until(lambda: (i := client.info()).n_workers == 2 and i, 60)
        assert info.n_workers_wanted == 2
        assert _size_health(server.target) == health_pb2.HealthCheckResponse.SERVING
        (victim, *_) = _worker_pids(server.process.pid, client)
        os.kill(victim, signal.SIGKILL)

        def restored() -> bool:
            return "starting them again" in server.log() and client.info().n_workers == 2

        wait_until(restored, 90, message=lambda: f"the worker back:\n{server.log()[-3000:]}")
        assert "the cluster has 1 of its 2 workers" in server.log()
        assert client.run("ping") == "pong"  # (the cluster serves with the worker back)
        wait_until(
            lambda: _size_health(server.target) == health_pb2.HealthCheckResponse.SERVING, 30
        )
