"""A large result read from the Dask worker that holds it, on a real LocalCluster (no server)."""

from __future__ import annotations

import asyncio
import hashlib
import pickle

import numpy as np
import pytest

from server import cluster_results, worker_stream
from server.errors import Unavailable
from tests.helpers import async_wait_until

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


def make_array(n: int) -> np.ndarray:
    return np.arange(n, dtype="float64")


def streams_held(dask_worker) -> int:
    return len(getattr(dask_worker, "_dask_compute_streams", {}))


async def _holds_none(client, worker) -> bool:
    return await client.run(streams_held) == {worker: 0}


def forget_streams(dask_worker) -> None:
    dask_worker._dask_compute_streams.clear()


def lose(key, dask_worker) -> None:
    del dask_worker.data[key]


@pytest.fixture(scope="module")
def scheduler():
    """The address of the module's cluster: one worker process of one thread.

    Its own, not the session server's: the tests count the streams every
    worker holds, and the session server's streams would be among them.
    """
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as cluster:
        yield cluster.scheduler_address


def _with_cluster(scheduler: str, scenario) -> None:
    """Run ``scenario(client)`` with an asynchronous client of ``scheduler``, in a new loop."""
    from distributed import Client

    async def main() -> None:
        async with Client(scheduler, asynchronous=True) as client:
            await scenario(client)

    asyncio.run(main())


async def _read(stream, offset: int, size: int) -> bytes:
    return b"".join([bytes(chunk) async for chunk in stream.achunks(offset, size)])


def _load(stream, data: bytes):
    view, segments, position = memoryview(data), [], 0
    for size in stream.segment_sizes:
        segments.append(view[position : position + size])
        position += size
    return pickle.loads(segments[0], buffers=segments[1:])


def test_a_large_result_is_encoded_hashed_and_read_on_its_worker(scheduler, monkeypatch) -> None:
    monkeypatch.setattr(worker_stream, "PIECE_BYTES", 3 * MiB)  # many pieces, a few ahead
    n = 5 * MiB  # 40 MiB

    async def scenario(client):
        future = client.submit(make_array, n, pure=False)
        await future.exception()
        result = cluster_results.ClusterResult([future], "single", direct=True)
        stream = await result.open_stream("pickle", False)
        assert isinstance(stream, worker_stream.WorkerStream)
        assert stream.sha256 == "" and stream.total_size > 40 * MiB
        data = await _read(stream, 0, MiB)
        np.testing.assert_array_equal(_load(stream, data), make_array(n))
        assert await stream.digest() == hashlib.sha256(data).hexdigest()
        # A stream resumed from an offset: the same bytes from there.
        offset = 7 * MiB + 123
        assert await _read(stream, offset, MiB) == data[offset:]
        assert await client.run(streams_held) == {stream.worker: 1}
        stream.closer()()
        await async_wait_until(
            lambda: _holds_none(client, stream.worker), timeout=5, message="the worker to let go"
        )

    _with_cluster(scheduler, scenario)


def test_a_worker_that_forgets_the_stream_midway_answers_unavailable(scheduler) -> None:
    async def scenario(client):
        future = client.submit(make_array, 3 * MiB, pure=False)
        await future.exception()
        stream = await cluster_results.ClusterResult([future], "single", True).open_stream(
            "auto", False
        )
        assert isinstance(stream, worker_stream.WorkerStream)
        await client.run(forget_streams)
        with pytest.raises(Unavailable, match="ask again"):
            await _read(stream, 0, MiB)

    _with_cluster(scheduler, scenario)


def test_a_value_its_worker_lost_is_fetched_the_usual_way(scheduler) -> None:
    async def scenario(client):
        future = client.submit(make_array, 3 * MiB, pure=False)
        await future.exception()
        await client.run(lose, future.key)
        result = cluster_results.ClusterResult([future], "single", direct=True)
        assert await result.open_stream("pickle", False) is None

    _with_cluster(scheduler, scenario)
