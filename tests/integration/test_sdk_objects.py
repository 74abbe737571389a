"""client.scatter: data uploaded once, used by reference in many jobs, through the real server."""

from __future__ import annotations

import dask
import numpy as np
import pytest

from client_sdk import AsyncComputeClient, ComputeClient, NotFound, ObjectRef

pytestmark = pytest.mark.integration


def test_scatter_once_and_use_everywhere(client: ComputeClient) -> None:
    array = np.arange(2_000_000, dtype="float64")  # 16 MiB
    ref = client.scatter(array)
    assert isinstance(ref, ObjectRef) and ref.object_id.startswith("sha256:")
    assert ref.size >= array.nbytes
    assert client.scatter(array) == ref, "the same data is the same object, not uploaded again"
    expected = float(array.sum())
    for scheduler in ("distributed", "threads", "processes"):
        assert client.submit(np.sum, ref, scheduler=scheduler).result(timeout=60) == expected
    assert client.run("array_sum", ref) == expected
    assert [j.result(timeout=60) for j in client.map(np.max, [ref, ref])] == [array.max()] * 2
    total = dask.delayed(np.sum)(ref)
    assert client.compute(total) == (expected,)  # graphs get the value on the cluster too
    assert client.compute(total, scheduler="threads") == (expected,)
    assert client.delete_object(ref) is True
    assert client.delete_object(ref) is False
    with pytest.raises(NotFound, match="upload it with PutObject"):
        client.submit(np.sum, ref).result(timeout=30)


@pytest.mark.asyncio
async def test_async_scatter(server) -> None:
    async with AsyncComputeClient(server.target, timeout=60) as client:
        ref = await client.scatter({"rows": list(range(1000))})
        job = await client.submit(len, ref)
        assert await job == 1
        assert await client.delete_object(ref)
