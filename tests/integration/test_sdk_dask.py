"""Dask collections on the service: ``compute``, ``get`` as a scheduler, ``as_default``."""

from __future__ import annotations

import uuid

import dask
import dask.array as da
import dask.bag as db
import numpy as np
import pytest

from client_sdk import SCHEDULERS, ComputeClient, DefaultScheduler, JobInfo
from server import cluster
from tests.helpers import throws

pytestmark = pytest.mark.integration


def _array():
    x = da.arange(10_000, chunks=1_000).reshape(100, 100).rechunk(25)
    return (x + x.T).sum(axis=0)[:5]


def _bag():
    return (
        db.from_sequence(range(100), npartitions=4)
        .map(lambda v: v * 3)
        .filter(lambda v: v % 2)
        .sum()
    )


def _delayed():
    parts = [dask.delayed(lambda i: i * i)(i) for i in range(10)]
    return dask.delayed(sum)(parts)


def _newest(client: ComputeClient) -> JobInfo:
    return next(iter(client.list_jobs(limit=1)))


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_compute_returns_what_dask_compute_returns(client: ComputeClient, scheduler: str) -> None:
    expected = dask.compute(_array(), _bag(), _delayed(), scheduler="sync")
    got = client.compute(_array(), _bag(), _delayed(), scheduler=scheduler)
    assert isinstance(got, tuple) and len(got) == 3
    np.testing.assert_array_equal(got[0], expected[0])
    assert got[1:] == expected[1:]
    job = _newest(client)
    assert (job.kind, job.scheduler) == ("graph", scheduler)


def test_compute_keeps_the_shape_of_its_arguments(client: ComputeClient) -> None:
    nested = {"a": _delayed(), "b": [_bag(), 7]}
    assert client.compute(nested, "plain") == ({"a": 285, "b": [7500, 7]}, "plain")
    assert client.compute(nested, traverse=False)[0] is nested


def test_compute_without_collections_sends_nothing(client: ComputeClient) -> None:
    before = _newest(client).job_id
    assert client.compute(1, "x") == (1, "x")
    assert _newest(client).job_id == before


@pytest.mark.parametrize("make", [_array, _bag, _delayed], ids=["array", "bag", "delayed"])
def test_get_is_a_dask_scheduler_function(client: ComputeClient, make) -> None:
    expected = make().compute(scheduler="sync")
    got = make().compute(scheduler=client.get)
    np.testing.assert_array_equal(got, expected)
    job = _newest(client)
    assert (job.kind, job.scheduler) == ("graph", "distributed")


def test_get_takes_a_plain_task_graph(client: ComputeClient) -> None:
    from operator import add

    # Keys name results on the shared cluster, as in dask.distributed: unique ones.
    x, y, z = (f"{name}-{uuid.uuid4().hex}" for name in "xyz")
    graph = {x: 1, y: (add, x, 10), z: (add, y, x)}
    assert client.get(graph, z, scheduler="threads") == 12
    assert client.get(graph, [[x, y], z]) == [[1, 11], 12]


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_as_default_runs_plain_compute_on_the_service(
    client: ComputeClient, scheduler: str
) -> None:
    array, delayed = _array(), _delayed()
    expected = array.compute(scheduler="sync")
    with client.as_default(scheduler=scheduler) as entered:
        assert entered is client
        np.testing.assert_array_equal(array.compute(), expected)
        job = _newest(client)
        assert (job.kind, job.scheduler) == ("graph", scheduler)
        assert dask.compute(delayed) == (285,)
        assert _newest(client).job_id != job.job_id
    before = _newest(client).job_id
    assert delayed.compute() == 285  # local again after the block
    assert _newest(client).job_id == before


def test_an_explicit_local_scheduler_still_runs_locally(client: ComputeClient) -> None:
    with client.as_default():
        before = _newest(client).job_id
        assert _delayed().compute(scheduler="threads") == 285
        assert dask.compute(_bag(), scheduler="sync") == (7500,)
        assert _newest(client).job_id == before
        assert client.compute(_delayed(), scheduler="threads") == (285,)
        assert _newest(client).job_id != before


def test_as_default_without_a_block_lasts_until_close(server) -> None:
    previous = dask.config.get("scheduler", None)
    client = ComputeClient(server.target, timeout=60)
    default = client.as_default()
    assert isinstance(default, DefaultScheduler) and default.active
    assert _delayed().compute() == 285
    assert _newest(client).kind == "graph"
    client.close()
    assert not default.active
    assert dask.config.get("scheduler", None) is previous


def test_a_failing_task_raises_through_compute(client: ComputeClient) -> None:
    with pytest.raises(ValueError, match="from a task"):
        client.compute(dask.delayed(throws)("from a task"))
    with client.as_default(), pytest.raises(ValueError, match="from a task"):
        dask.delayed(throws)("from a task").compute()


def _monitor_interval() -> str:
    import dask.config

    return str(dask.config.get("distributed.worker.memory.monitor-interval"))


def test_the_servers_workers_run_with_its_slower_memory_monitor(local_client) -> None:
    # The nannies hand the server's Dask configuration to the workers they start.
    job = local_client.submit(_monitor_interval, scheduler="distributed")
    assert (
        job.result(timeout=60)
        == cluster.MONITORING_DEFAULTS["distributed"]["worker"]["memory"]["monitor-interval"]
    )
