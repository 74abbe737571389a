"""A server killed with SIGKILL leaves none of its processes behind: not its
LocalCluster's worker processes (Dask's nannies run in the server's process), not
the ``processes`` pools' children (a retired pool's replacement included, and one
busy with a job), not multiprocessing's resource tracker. A real ``dask-compute
serve`` process, the real SDK, and psutil to look at its descendants."""

from __future__ import annotations

import signal

import psutil
import pytest

from client_sdk import ComputeClient, JobState
from tests.helpers import slowinc, start_server, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ARGS = ["--n-workers", "2", "--threads-per-worker", "1", "--local-processes", "2",
        "--dashboard-address", ""]  # fmt: skip


def alive(processes: list[psutil.Process]) -> list[str]:
    """Those of ``processes`` still running (zombies are gone), as ``pid command``."""
    left = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{process.pid} {' '.join(process.cmdline())[:120]}")
        except psutil.NoSuchProcess:
            pass
    return left


def test_a_server_killed_with_sigkill_leaves_no_process_behind(tmp_path):
    server = start_server(ARGS, tmp_path / "server.log")
    descendants: list[psutil.Process] = []
    try:
        with ComputeClient(server.target, timeout=60) as client:
            assert (
                client.submit(slowinc, 1, delay=0.0, scheduler="processes").result(timeout=60) == 2
            )
            assert (
                client.submit(slowinc, 2, delay=0.0, scheduler="distributed").result(timeout=60)
                == 3
            )
            # A cancelled job retires its pool: the next job starts a new one.
            cancelled = client.submit(slowinc, 3, delay=60.0, scheduler="processes")
            wait_until(lambda: cancelled.info().state is JobState.RUNNING, 30, message="running")
            cancelled.cancel()
            assert (
                client.submit(slowinc, 4, delay=0.0, scheduler="processes").result(timeout=60) == 5
            )
            # And one job is busy in a pool process when the server is killed.
            busy = client.submit(slowinc, 5, delay=60.0, scheduler="processes")
            wait_until(lambda: busy.info().state is JobState.RUNNING, 30, message="running")
        descendants = psutil.Process(server.process.pid).children(recursive=True)
        commands = " ".join(" ".join(p.cmdline()) for p in descendants)
        assert "multiprocessing.spawn" in commands, f"no pool or worker processes: {commands}"
        server.stop(signal.SIGKILL)
        wait_until(
            lambda: not alive(descendants),
            timeout=10,
            message=lambda: (
                "the killed server's processes to end: " + "; ".join(alive(descendants))
            ),
        )
    finally:
        if server.process.poll() is None:
            server.stop(signal.SIGKILL)
        for process in descendants:  # (those a failed check left)
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
