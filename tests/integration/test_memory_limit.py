"""A job leaking memory past the worker limit ends failed with KilledWorker; the server stays up.

The nanny terminates a worker process whose memory passes 95% of its limit
(``distributed.worker.memory.terminate``); Dask reschedules the task, and once
it has killed more workers than ``distributed.scheduler.allowed-failures``
allows, the task fails with ``KilledWorker``. The job must end there, with that
reason in its record, and the next job must run on the restarted worker.
"""

from __future__ import annotations

import time

import pytest

from client_sdk import ComputeClient, JobFailed, JobState
from tests.helpers import inc, running_server, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LIMIT_MIB = 300
STEP_MIB = 50
#: Far past the limit: if no worker is killed by then, the job returns and the test fails.
MOST_STEPS = 24


def _leak(step_mib: int, steps: int, pause: float) -> str:
    """Hold ``steps`` blocks of ``step_mib`` MiB, one every ``pause`` seconds, pages touched."""
    held = []
    for _ in range(steps):
        held.append(b"\x01" * (step_mib * 2**20))  # filled, so every page is resident
        time.sleep(pause)
    return f"survived holding {len(held) * step_mib} MiB"


def _workers(client: ComputeClient) -> int:
    return client.info().n_workers


def test_a_job_leaking_past_the_memory_limit_fails_with_killed_worker(tmp_path):
    args = [
        "--n-workers", "1",
        "--threads-per-worker", "1",
        "--processes",
        "--memory-limit", f"{LIMIT_MIB}MiB",
        "--dashboard-address", "",
        "--local-processes", "1",
    ]  # fmt: skip
    # One reschedule, then KilledWorker: the job kills two workers in all.
    env = {"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "1"}
    with (
        running_server(args, tmp_path / "server.log", env=env) as srv,
        ComputeClient(srv.target, timeout=60) as client,
    ):
        assert client.info().workers[0].memory_limit == LIMIT_MIB * 2**20

        start = time.monotonic()
        job = client.submit(_leak, STEP_MIB, MOST_STEPS, 0.25)
        error = job.exception(timeout=90)
        took = time.monotonic() - start

        log = srv.log()
        assert error is not None, f"the job ended {job.result()!r}:\n{log[-3000:]}"
        # The SDK rebuilds Dask's exception (JobFailed if it cannot).
        name = error.type if isinstance(error, JobFailed) else type(error).__name__
        assert "KilledWorker" in name, repr(error)
        assert "_leak" in str(error), str(error)
        assert took < 60, f"the job took {took:.1f}s to fail"
        assert "exceeded 95% memory budget" in log, log[-3000:]

        record = client.get_job(job.job_id)
        assert record.state is JobState.FAILED
        assert record.error is not None
        assert record.error.type == "distributed.scheduler.KilledWorker"
        assert record.error.message
        listed = {j.job_id: j for j in client.list_jobs(states=["failed"])}
        assert listed[job.job_id].error.type == record.error.type

        # The service stays up, and the nanny restarted the worker.
        assert client.run("ping") == "pong"
        wait_until(lambda: _workers(client) >= 1, timeout=30, message="the restarted worker")
        assert _workers(client) == 1
        assert client.submit(inc, 41, scheduler="distributed").result(timeout=60) == 42
        assert client.run("add", 2, 3, scheduler="distributed") == 5
    assert srv.process.returncode == 0, srv.log()[-3000:]
