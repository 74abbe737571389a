"""Jobs read and wait as Dask futures do: ``status``, ``key``, ``wait``,
``as_completed`` and ``fire_and_forget``, blocking and asynchronous, on the
session's real server and cluster."""

from __future__ import annotations

import time

import pytest
import pytest_asyncio

from client_sdk import (
    AsyncComputeClient,
    ComputeClient,
    DoneAndNotDone,
    JobState,
    JobTimeout,
    as_completed,
    fire_and_forget,
    wait,
)
from tests.helpers import inc, slowinc, throws, wait_until

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture
async def aclient(server):
    async with AsyncComputeClient(server.target, timeout=60) as client:
        yield client


def test_status_is_dasks_string_and_key_is_the_id(client: ComputeClient) -> None:
    slow = client.submit(slowinc, 1, delay=1.0)
    failed = client.submit(throws, "kaput")
    cancelled = client.submit(slowinc, 1, delay=30, scheduler="synchronous")
    assert slow.status == "pending" and slow.key == slow.job_id
    cancelled.cancel()
    wait([slow, failed, cancelled], timeout=30)
    assert (slow.status, failed.status, cancelled.status) == ("finished", "error", "cancelled")
    # The service's own state is a call away.
    assert slow.state() is JobState.SUCCEEDED and failed.state() is JobState.FAILED


def test_wait_all_first_and_its_timeout(client: ComputeClient) -> None:
    fast, slow = client.submit(inc, 1), client.submit(slowinc, 1, delay=3.0)
    first = wait([fast, slow], timeout=30, return_when="FIRST_COMPLETED")
    assert isinstance(first, DoneAndNotDone) and fast in first.done and slow in first.not_done
    with pytest.raises(JobTimeout, match="1 of the jobs did not end within 0.2s"):
        wait([fast, slow], timeout=0.2)
    done, not_done = wait([fast, slow], timeout=30)
    assert done == {fast, slow} and not not_done
    with pytest.raises(ValueError, match="return_when must be one of"):
        wait([fast], return_when="SOMETIMES")


def test_wait_first_exception_returns_on_the_failure(client: ComputeClient) -> None:
    slow, failed = client.submit(slowinc, 1, delay=5.0), client.submit(throws, "kaput")
    started = time.monotonic()
    done, not_done = wait([slow, failed], timeout=30, return_when="FIRST_EXCEPTION")
    assert failed in done and slow in not_done and time.monotonic() - started < 4.0


def test_as_completed_in_the_order_jobs_end(client: ComputeClient) -> None:
    jobs = [client.submit(slowinc, i, delay=0.6 * (3 - i)) for i in range(3)]
    assert [job.result() for job in as_completed(jobs)] == [3, 2, 1]
    pairs = list(
        as_completed(
            [client.submit(inc, 1), client.submit(throws)], with_results=True, raise_errors=False
        )
    )
    values = {type(value).__name__ if isinstance(value, Exception) else value for _, value in pairs}
    assert values == {2, "ValueError"}
    with pytest.raises(ValueError, match="kaput"):
        list(as_completed([client.submit(throws, "kaput")], with_results=True))
    growing = as_completed([client.submit(inc, 1)])
    seen = []
    for job in growing:
        seen.append(job.result())
        if len(seen) == 1:
            growing.add(client.submit(inc, 10))
    assert seen == [2, 11] and growing.is_empty()


def test_fire_and_forget_frees_the_result_once_the_job_ends(client: ComputeClient) -> None:
    job = client.submit(slowinc, 1, delay=0.5)
    fire_and_forget(job)
    wait_until(
        lambda: job.done() and not client.get_job(job.job_id).result_available,
        30,
        message="the result freed",
    )
    kept = client.submit(inc, 1)
    kept.result(30)
    assert client.get_job(kept.job_id).result_available, (
        "without fire_and_forget the result stays held"
    )


@pytest.mark.asyncio
async def test_the_same_on_async_jobs(aclient: AsyncComputeClient) -> None:
    slow, fast = await aclient.submit(slowinc, 1, delay=1.0), await aclient.submit(inc, 1)
    assert slow.status == "pending" and slow.key == slow.job_id
    done, not_done = await wait([slow, fast], timeout=30, return_when="FIRST_COMPLETED")
    assert fast in done and slow in not_done and fast.status == "finished"
    ended = [await job.result() async for job in as_completed([slow, await aclient.submit(inc, 5)])]
    assert sorted(ended) == [2, 6]
    assert (await wait([slow], timeout=30)).done == {slow}
    with pytest.raises(TypeError, match="async for"):
        iter(as_completed([slow])).__next__()
