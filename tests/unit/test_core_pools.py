"""No caller can starve the local pools: cancelled jobs, unstoppable threads, shares.

Each test builds a core of its own (in memory, one in-process worker) with a
small pool, fills it the way a careless or hostile caller would, and checks
that the next job still runs, or is refused at once saying why.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import time

import cloudpickle
import psutil
import pytest

from server.auth import Caller
from server.core import ComputeCore, JobRequest
from server.errors import ResourceExhausted
from server.jobs import JobKind, JobState
from tests.helpers import async_wait_until, own_core, slowinc

pytestmark = pytest.mark.asyncio

ALICE = Caller("alice", frozenset({"run", "code"}))
BOB = Caller("bob", frozenset({"run", "code"}))
#: Long enough that a job waiting for one of these threads is plainly stuck;
#: short enough that the test process does not wait long for them at exit.
SLOW = 6.0


def pickled(func, *args, scheduler="threads", **kwargs) -> JobRequest:
    payload = cloudpickle.dumps((func, args, kwargs))
    return JobRequest(kind=JobKind.PICKLED_CALL, payload=payload, scheduler=scheduler)


def ping(scheduler="threads") -> JobRequest:
    return JobRequest(kind=JobKind.FUNCTION, function="ping", scheduler=scheduler)


async def _running(core: ComputeCore, job_id: str, caller: Caller) -> None:
    async def running() -> bool:
        return (await core.get_job(job_id, caller)).state is JobState.RUNNING

    await async_wait_until(running, 10, message=f"job {job_id} to run")


async def test_cancelled_threads_jobs_leave_the_pool_to_the_next_job():
    core = own_core(local_threads=2)
    await core.start()
    try:
        slow = [await core.submit(pickled(slowinc, i, delay=SLOW), ALICE) for i in range(2)]
        for record in slow:
            await _running(core, record.job_id, ALICE)
        await asyncio.sleep(0.2)  # (both threads now sleep in the job's code)
        for record in slow:
            await core.cancel_job(record.job_id, "", ALICE)
        started = time.monotonic()
        record = await asyncio.wait_for(core.run(ping(), BOB), SLOW / 2)
        assert record.state is JobState.SUCCEEDED
        assert time.monotonic() - started < SLOW / 2, "the ping waited for a cancelled job"
    finally:
        await core.close()


async def test_a_cancelled_job_counts_against_its_caller_until_its_thread_returns():
    core = own_core(local_threads=2, max_jobs_per_caller=1)
    await core.start()
    try:
        record = await core.submit(pickled(slowinc, 1, delay=2.0), ALICE)
        await _running(core, record.job_id, ALICE)
        await core.cancel_job(record.job_id, "", ALICE)
        with pytest.raises(ResourceExhausted, match="max_jobs_per_caller"):
            await core.submit(ping(), ALICE)

        async def accepted() -> bool:
            try:
                await core.submit(ping(), ALICE)
            except ResourceExhausted:
                return False
            return True

        await async_wait_until(accepted, 10, message="alice's job to end once its thread returned")
    finally:
        await core.close()


async def test_past_its_bound_of_abandoned_calls_a_pool_refuses_at_once_saying_why():
    core = own_core(local_threads=1, max_abandoned_threads=1)
    await core.start()
    try:
        record = await core.submit(pickled(slowinc, 1, delay=2.0), ALICE)
        await _running(core, record.job_id, ALICE)
        await asyncio.sleep(0.2)  # (the thread now sleeps in the job's code)
        await core.cancel_job(record.job_id, "", ALICE)
        with pytest.raises(ResourceExhausted, match="max_abandoned_threads"):
            await core.submit(ping(), BOB)
        # Other schedulers are not held up.
        assert (await core.run(ping("synchronous"), BOB)).state is JobState.SUCCEEDED

        async def served() -> bool:
            try:
                return (await core.run(ping(), BOB)).state is JobState.SUCCEEDED
            except ResourceExhausted:
                return False

        await async_wait_until(served, 10, message="the pool to take jobs once the thread returned")
    finally:
        await core.close()


async def test_with_credentials_one_caller_cannot_hold_the_whole_pool():
    token = "alice-token-0123456789abcdef"
    core = own_core(local_threads=2, tokens=f"alice run,code {token}\nbob run,code b{token}")
    await core.start()
    try:
        for i in range(2):
            await core.submit(pickled(slowinc, i, delay=SLOW), ALICE)
        started = time.monotonic()
        record = await asyncio.wait_for(core.run(ping(), BOB), SLOW / 2)
        assert record.state is JobState.SUCCEEDED
        assert time.monotonic() - started < SLOW / 2, "bob waited for alice's jobs"
    finally:
        await core.close()


def _write_pid_then_sleep(path: str, seconds: float) -> None:
    pathlib.Path(path).write_text(str(os.getpid()))
    time.sleep(seconds)


async def test_cancelling_a_processes_job_ends_its_process(tmp_path):
    core = own_core(local_processes=1)
    await core.start()
    try:
        marker = tmp_path / "pid"
        request = pickled(_write_pid_then_sleep, str(marker), 60, scheduler="processes")
        record = await core.submit(request, ALICE)
        await async_wait_until(marker.exists, 30, message="the job to start in its process")
        pid = int(marker.read_text())
        await core.cancel_job(record.job_id, "", ALICE)
        await async_wait_until(
            lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie",
            10,
            message="the cancelled job's process to end",
        )
        # And the pool serves the next job.
        assert (await core.run(ping("processes"), BOB)).state is JobState.SUCCEEDED
    finally:
        await core.close()


async def test_a_job_whose_result_cannot_be_held_fails_instead_of_hanging(monkeypatch):
    core = own_core()
    await core.start()
    try:

        async def refuses(job_id, value, encoded):
            raise TypeError("cannot hold this result")

        monkeypatch.setattr(core.runner, "succeeded", refuses)
        record = await asyncio.wait_for(core.run(ping(), BOB), 10)
        assert record.state is JobState.FAILED
        assert "cannot hold this result" in record.error.message
    finally:
        await core.close()
