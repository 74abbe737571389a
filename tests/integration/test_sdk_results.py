"""Results too large to come inline: streamed, reassembled, and released by their owner."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from client_sdk import AsyncComputeClient, ComputeClient, NotFound

pytestmark = pytest.mark.integration

BIG = 600_000  # float64s: 4.8 MB, over the server's 1 MiB inline limit


def test_a_large_result_is_streamed_and_released(client: ComputeClient) -> None:
    job = client.submit(np.arange, BIG, scheduler="threads")
    value = job.result(timeout=60)
    np.testing.assert_array_equal(value, np.arange(BIG))
    assert client.get_job(job.job_id).result_available is False  # freed once read


@pytest.mark.parametrize("scheduler", ["distributed", "synchronous"])
def test_large_results_of_run_and_compute(client: ComputeClient, scheduler: str) -> None:
    (value,) = client.compute(da.ones(BIG, chunks=100_000), scheduler=scheduler)
    assert value.shape == (BIG,) and value.sum() == BIG
    text = client.run("greet", "x" * (2 * 1024 * 1024), scheduler=scheduler)
    assert len(text) == 2 * 1024 * 1024 + len("hello !")


def test_a_job_attached_by_id_leaves_the_result_to_its_owner(server, client: ComputeClient) -> None:
    job = client.submit_function("scale", [1.0] * 200_000, factor=3)
    job.exception(timeout=60)
    with ComputeClient(server.target, timeout=60) as other:
        attached = other.job(job.job_id)
        assert attached.result(timeout=60) == [3.0] * 200_000
        assert other.get_job(job.job_id).result_available is True
        assert attached.release() is True
        assert other.release(job.job_id) is False
        with pytest.raises(NotFound, match="released"):
            other.job(job.job_id).result(timeout=60)


@pytest.mark.asyncio
async def test_the_async_client_streams_too(server) -> None:
    async with AsyncComputeClient(server.target, timeout=60) as client:
        job = await client.submit(np.arange, BIG)
        np.testing.assert_array_equal(await job, np.arange(BIG))
        (value,) = await client.compute(da.arange(BIG, chunks=200_000), scheduler="threads")
        np.testing.assert_array_equal(value, np.arange(BIG))
