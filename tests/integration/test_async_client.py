"""Every method of ``AsyncComputeClient`` and ``AsyncJob`` against the real server."""

from __future__ import annotations

import asyncio
import uuid

import dask
import dask.array as da
import pytest
import pytest_asyncio

from client_sdk import (
    AsyncComputeClient,
    AsyncJob,
    ComputeError,
    FunctionNotFound,
    JobCancelled,
    JobFailed,
    JobInfo,
    JobState,
    JobTimeout,
    ServiceUnavailable,
)
from tests.helpers import CustomError, inc, slowinc

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]


def raise_custom(message):
    raise CustomError(message)


@pytest_asyncio.fixture
async def aclient(server):
    async with AsyncComputeClient(server.target, timeout=60) as client:
        yield client


async def test_info_functions_and_repr(aclient: AsyncComputeClient, server) -> None:
    assert repr(aclient) == f"<AsyncComputeClient: 'grpc://{server.target}' not connected>"
    info = await aclient.info()
    assert (info.n_workers, info.total_threads) == (2, 4)
    assert repr(aclient).startswith(
        f"<AsyncComputeClient: 'grpc://{server.target}' workers=2 threads=4, memory="
    )
    assert "ping" in {f.name for f in await aclient.functions()}


async def test_run_and_its_errors(aclient: AsyncComputeClient) -> None:
    assert await aclient.run("add", 2, 3) == 5
    assert await aclient.run("greet", "x", punctuation=".", scheduler="threads") == "hello x."
    with pytest.raises(FunctionNotFound):
        await aclient.run("nope")
    with pytest.raises(JobTimeout, match="the server cancelled it"):
        await aclient.run("sleep", 5, scheduler="synchronous", timeout=0.3)


async def test_submit_returns_an_awaitable_job(aclient: AsyncComputeClient) -> None:
    job = await aclient.submit(inc, 1, scheduler="threads")
    assert isinstance(job, AsyncJob)
    assert await job == 2
    assert job.done() and not job.cancelled()
    assert await job.result() == 2 and await job.exception() is None
    assert await job.state() is JobState.SUCCEEDED and not await job.running()
    assert (await job.info()).scheduler == "threads"
    assert repr(job) == f"<AsyncJob {job.job_id}: succeeded>"


async def test_job_options_on_the_async_client(aclient: AsyncComputeClient) -> None:
    job = await aclient.submit_function(
        "sleep", 10, scheduler="synchronous", job_name="async limit", job_timeout=0.5
    )
    with pytest.raises(JobFailed, match="time limit of 0.5s"):
        await job
    assert (await job.info()).name == "async limit"
    assert await aclient.run("ping", job_name="async ping") == "pong"
    assert [j.name async for j in aclient.list_jobs(limit=1)] == ["async ping"]


async def test_submit_function_and_the_remote_exception(aclient: AsyncComputeClient) -> None:
    assert await (await aclient.submit_function("add", 1, 2)) == 3
    job = await aclient.submit(raise_custom, "boom")
    with pytest.raises(CustomError, match="boom"):
        await job
    assert isinstance(await job.exception(), CustomError)


async def test_map_and_gather(aclient: AsyncComputeClient) -> None:
    jobs = await aclient.map(inc, range(30), batch_size=7, scheduler="threads")
    assert len(jobs) == 30
    assert await aclient.gather(jobs) == list(range(1, 31))
    assert await aclient.gather(jobs[3]) == 4


async def test_a_job_as_a_future(aclient: AsyncComputeClient) -> None:
    job = await aclient.submit(slowinc, 1, delay=0.5)
    fired = []
    job.add_done_callback(fired.append)
    with pytest.raises(JobTimeout):
        await job.result(timeout=0.05)
    assert not job.done() and fired == []
    assert await job.result(timeout=30) == 2
    await asyncio.sleep(0)
    assert fired == [job]


async def test_cancel_a_job(aclient: AsyncComputeClient) -> None:
    job = await aclient.submit(slowinc, 1, delay=10, scheduler="synchronous")
    assert await job.running() or await job.state() is JobState.QUEUED
    assert await job.cancel("enough") is True
    assert job.cancelled() and job.done()
    with pytest.raises(JobCancelled, match="enough"):
        await job
    with pytest.raises(JobCancelled):
        await job.exception()
    other = await aclient.submit(slowinc, 1, delay=10, scheduler="synchronous")
    assert await aclient.cancel(other.job_id) is True
    with pytest.raises(JobCancelled):
        await other.result(timeout=30)


async def test_compute_and_get(aclient: AsyncComputeClient) -> None:
    x = da.ones((10, 10), chunks=5).sum()
    assert await aclient.compute(x, scheduler="threads") == (100.0,)
    nested = {"a": dask.delayed(inc)(1), "b": 2}
    assert await aclient.compute(nested) == ({"a": 2, "b": 2},)
    # Keys name results on the shared cluster, as in dask.distributed: unique ones.
    x, y = f"x-{uuid.uuid4().hex}", f"y-{uuid.uuid4().hex}"
    assert await aclient.get({x: 1, y: (inc, x)}, y) == 2


async def test_get_job_job_wait_and_list_jobs(aclient: AsyncComputeClient) -> None:
    job = await aclient.submit(slowinc, 1, delay=0.3)
    record = await aclient.wait(job.job_id, timeout=30)
    assert isinstance(record, JobInfo) and record.state is JobState.SUCCEEDED
    assert (await aclient.get_job(job.job_id)).job_id == job.job_id
    attached = await aclient.job(job.job_id)
    assert await attached == 2
    listed = [j async for j in aclient.list_jobs(limit=3)]
    assert len(listed) == 3 and listed[0].job_id == job.job_id
    succeeded = [j async for j in aclient.list_jobs(["succeeded"], limit=2)]
    assert succeeded[0].state is JobState.SUCCEEDED


async def test_closing_lets_go_of_unfinished_jobs(server) -> None:
    client = AsyncComputeClient(server.target, timeout=60)
    job = await client.submit(slowinc, 1, delay=10, scheduler="synchronous")
    await client.close()
    with pytest.raises(ComputeError, match="closed before job"):
        await job
    with pytest.raises(ComputeError, match="closed"):
        await client.info()
    async with AsyncComputeClient(server.target) as other:
        assert await other.cancel(job.job_id) is True


async def test_service_unavailable(unused_tcp_port: int) -> None:
    async with AsyncComputeClient(f"127.0.0.1:{unused_tcp_port}", timeout=0.5) as client:
        with pytest.raises(ServiceUnavailable, match="127.0.0.1"):
            await client.info()
