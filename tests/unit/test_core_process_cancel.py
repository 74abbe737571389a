"""A cancelled ``processes`` job holds what it held until its process is really gone.

Cancelling a job on the ``processes`` pool retires the pool and ends its
processes (server.process_pools.ProcessPools). Until the job's process has ended, the
job still counts against its caller's limits (not earlier: its work is still
running); once it has ended, the caller's next job is accepted and runs at
once on the fresh pool (not never: a process that ignores SIGTERM is killed).
Each test builds a core of its own, as tests/unit/test_core_pools.py does.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import signal
import time

import cloudpickle
import psutil
import pytest

from server.auth import Caller
from server.core import JobRequest
from server.errors import ResourceExhausted
from server.jobs import JobKind, JobState
from tests.helpers import async_wait_until, own_core

pytestmark = pytest.mark.asyncio

ALICE = Caller("alice", frozenset({"run", "code"}))


def pickled(func, *args, scheduler="processes") -> JobRequest:
    payload = cloudpickle.dumps((func, args, {}))
    return JobRequest(kind=JobKind.PICKLED_CALL, payload=payload, scheduler=scheduler)


def ping(scheduler="processes") -> JobRequest:
    return JobRequest(kind=JobKind.FUNCTION, function="ping", scheduler=scheduler)


def _stubborn_sleep(path: str, seconds: float) -> None:
    """Sleep in a pool process that ignores SIGTERM, having written its pid."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    pathlib.Path(path).write_text(str(os.getpid()))
    time.sleep(seconds)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def _accepted(core, caller) -> bool:
    try:
        await core.submit(ping(), caller)
    except ResourceExhausted:
        return False
    return True


async def test_a_cancelled_processes_job_counts_until_its_process_is_gone(tmp_path):
    core = own_core(local_processes=1, max_jobs_per_caller=1)
    await core.start()
    try:
        marker = tmp_path / "pid"
        record = await core.submit(pickled(_stubborn_sleep, str(marker), 60), ALICE)
        await async_wait_until(marker.exists, 30, message="the job to start in its process")
        pid = int(marker.read_text())
        started = time.monotonic()
        cancelled, did = await core.cancel_job(record.job_id, "", ALICE)
        assert did and cancelled.state is JobState.CANCELLED
        assert time.monotonic() - started < 1.0, "cancelling waited on the event loop"
        # Its process ignores SIGTERM and still runs: the job still counts.
        assert not _gone(pid)
        with pytest.raises(ResourceExhausted, match="max_jobs_per_caller"):
            await core.submit(ping(), ALICE)
        await async_wait_until(lambda: _gone(pid), 15, message="the job's process to be killed")
        # Gone: alice's next job is accepted, and runs on the fresh pool at once.
        await async_wait_until(
            lambda: _accepted(core, ALICE), 5, message="alice's limit to be released"
        )
        record = await asyncio.wait_for(core.run(ping(), Caller("bob", ALICE.permissions)), 20)
        assert record.state is JobState.SUCCEEDED
    finally:
        await core.close()
