"""A cancelled or timed-out job's built-in ``sleep`` stops, freeing its thread.

A thread cannot be stopped from outside, so before ``server.cancellation`` a
cancelled ``sleep(30)`` held a Dask worker's thread (or a pool thread) for
its full 30 s: in the soak, most of the cluster's thread time went to sleeps
whose jobs had ended, and trivial jobs queued behind them for seconds. Each
test here builds a core with an in-process worker, so the threads that sleep
are this process's own and can be looked at.
"""

from __future__ import annotations

import sys
import time

import pytest

from server import cancellation
from server.auth import Caller
from server.core import JobRequest
from server.jobs import JobKind, JobState
from tests.helpers import async_wait_until, own_core

ALICE = Caller("alice", frozenset({"run", "code"}))
BUILTINS_SLEEP = "server/builtins.py"


def sleepers() -> int:
    """Threads of this process inside the built-in ``sleep`` now."""
    count = 0
    for frame in sys._current_frames().values():
        while frame is not None:
            code = frame.f_code
            if code.co_name == "sleep" and code.co_filename.endswith(BUILTINS_SLEEP):
                count += 1
                break
            frame = frame.f_back
    return count


def sleep(seconds: float, scheduler: str, timeout: float | None = None) -> JobRequest:
    return JobRequest(
        kind=JobKind.FUNCTION,
        function="sleep",
        args=(seconds,),
        scheduler=scheduler,
        timeout=timeout,
    )


async def _until(condition, seconds: float, message: str) -> None:
    async def met() -> bool:
        return condition()

    await async_wait_until(met, seconds, message=message)


@pytest.mark.asyncio
@pytest.mark.parametrize("scheduler", ["distributed", "threads", "synchronous"])
async def test_a_cancelled_sleep_gives_its_thread_back(scheduler):
    core = own_core()
    await core.start()
    try:
        before = sleepers()
        record = await core.submit(sleep(30, scheduler), ALICE)
        await _until(lambda: sleepers() > before, 10, "the sleep to start")
        await core.cancel_job(record.job_id, "the test changed its mind", ALICE)
        started = time.monotonic()
        await _until(lambda: sleepers() == before, 5, "the cancelled sleep's thread to return")
        assert time.monotonic() - started < 2.0
        assert (await core.get_job(record.job_id, ALICE)).state is JobState.CANCELLED
    finally:
        await core.close()


@pytest.mark.asyncio
async def test_a_timed_out_sleep_on_the_cluster_gives_its_thread_back():
    core = own_core()
    await core.start()
    try:
        before = sleepers()
        record = await core.submit(sleep(30, "distributed", timeout=0.5), ALICE)
        ended, _ = await core.wait_job(record.job_id, 20, ALICE)
        assert ended.state is JobState.FAILED
        assert ended.error is not None and ended.error.type == "TimeoutError"
        await _until(lambda: sleepers() == before, 3, "the timed-out sleep's thread to return")
        # The worker's one thread is free: a ping runs at once.
        started = time.monotonic()
        ping = await core.submit(JobRequest(kind=JobKind.FUNCTION, function="ping"), ALICE)
        pinged, _ = await core.wait_job(ping.job_id, 20, ALICE)
        assert pinged.state is JobState.SUCCEEDED
        assert time.monotonic() - started < 2.0
    finally:
        await core.close()


def test_cancelled_is_false_outside_any_job():
    assert cancellation.cancelled() is False
    assert cancellation.sleep(0.01) is True


def test_a_check_set_for_a_call_stops_the_sleep():
    flag = {"cancelled": False}
    with cancellation.checked_by(lambda: flag["cancelled"]):
        flag["cancelled"] = True
        started = time.monotonic()
        assert cancellation.sleep(10) is False
        assert time.monotonic() - started < 0.5
    assert cancellation.cancelled() is False
