"""Jobs as inputs: a ``Job`` passed where a value goes stands for its result, where it is held."""

from __future__ import annotations

import asyncio
import operator
import re
import urllib.request

import cloudpickle
import dask
import dask.array as da
import grpc
import numpy as np
import pytest

from client_sdk import (
    AsyncComputeClient,
    ComputeClient,
    FailedPrecondition,
    JobFailed,
    JobNotFound,
)
from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk._proto.compute.v1 import compute_pb2_grpc as pb_grpc
from client_sdk.types import JobState
from tests.helpers import (
    free_port,
    inc,
    local_settings,
    running_server,
    serving_in_process,
    slowinc,
    throws,
)

pytestmark = pytest.mark.integration

SCHEDULERS = ("distributed", "threads", "processes", "synchronous")


def test_a_chain_uses_each_previous_result_on_every_scheduler(local_client):
    for scheduler in SCHEDULERS:
        a = local_client.submit(np.arange, 1000, scheduler=scheduler)
        b = local_client.submit(np.multiply, a, 2, scheduler=scheduler)
        c = local_client.submit(np.sum, b, scheduler=scheduler)
        assert c.result(timeout=120) == 2 * sum(range(1000)), scheduler
        assert c.info().depends_on == (b.job_id,)
        assert b.info().depends_on == (a.job_id,)


def test_jobs_nested_in_arguments_and_as_keywords(local_client):
    a = local_client.submit(inc, 1)
    b = local_client.submit(inc, 10)
    both = local_client.submit(
        lambda pair, mapping, key: (pair, mapping, key), (a, [b]), {"x": a}, key=b
    )
    assert both.result(timeout=60) == ((2, [11]), {"x": 2}, 11)
    assert set(both.info().depends_on) == {a.job_id, b.job_id}


def test_a_job_in_a_dask_graph_is_a_dependency(local_client):
    for scheduler in ("distributed", "threads"):
        a = local_client.submit(np.ones, 100, scheduler=scheduler)
        total = dask.delayed(np.sum)(dask.delayed(operator.mul)(a, 3))
        (value,) = local_client.compute(total, scheduler=scheduler)
        assert value == 300, scheduler
        array = da.from_delayed(dask.delayed(a), shape=(100,), dtype=float)
        (value,) = local_client.compute((array * 2).sum(), scheduler=scheduler)
        assert value == 200, scheduler


def test_graph_jobs_results_of_every_shape_are_inputs(local_client, local_server):
    x, y = dask.delayed(inc)(1), dask.delayed(inc)(2)
    graphs = {
        "collections": ((x, y), (2, 3)),
        "a graph's keys": (({"p": (inc, 10), "q": (inc, "p")}, ["p", "q"]), [11, 12]),
        "one collection": (x, 2),
    }
    with grpc.insecure_channel(local_server.target) as channel:
        stub = pb_grpc.ComputeServiceStub(channel)
        for what, (work, expected) in graphs.items():
            spec = pb.JobSpec(
                graph=pb.DaskGraph(payload=cloudpickle.dumps(work)),
                scheduler=pb.SCHEDULER_DISTRIBUTED,
                result_format=pb.RESULT_FORMAT_PICKLE,
            )
            job_id = stub.SubmitJob(pb.SubmitJobRequest(job=spec), timeout=30).job.job_id
            upstream = local_client.job(job_id)
            for scheduler in ("distributed", "threads"):
                same = local_client.submit(lambda v: v, upstream, scheduler=scheduler)
                assert same.result(timeout=60) == expected, (what, scheduler)


def test_run_and_async_clients_take_jobs_too(local_client, local_server):
    a = local_client.submit_function("add", 2, 3)
    assert local_client.run("add", a, 1) == 6

    async def chain() -> int:
        async with AsyncComputeClient(local_server.target, timeout=60) as client:
            first = await client.submit(inc, 1)
            second = await client.submit(inc, first)
            return await second.result(timeout=60)

    assert asyncio.run(chain()) == 3


def test_a_fan_in_of_100_jobs_into_one(local_client):
    parts = local_client.map(inc, range(100), scheduler="distributed")
    total = local_client.submit(sum, parts, scheduler="distributed")
    assert total.result(timeout=120) == sum(range(1, 101))
    assert len(total.info().depends_on) == 100


def test_a_job_using_a_failed_job_fails_naming_it_and_never_runs(local_client):
    a = local_client.submit(throws, "the upstream broke")
    b = local_client.submit(inc, a)
    with pytest.raises(JobFailed) as caught:
        b.result(timeout=60)
    assert caught.value.type == "UpstreamFailed"
    assert a.job_id in caught.value.message and "the upstream broke" in caught.value.message
    info = b.info()
    assert info.state is JobState.FAILED and info.started is None


def test_a_failed_input_fails_the_job_without_waiting_for_the_others(local_client):
    slow = local_client.submit(slowinc, 1, delay=30, scheduler="threads")
    broken = local_client.submit(throws, "early", scheduler="threads")
    both = local_client.submit(lambda x, y: x + y, slow, broken, scheduler="threads")
    with pytest.raises(JobFailed, match="early"):
        both.result(timeout=20)
    assert not slow.done()
    slow.cancel()


def test_a_job_using_a_cancelled_job_fails(local_client):
    a = local_client.submit(slowinc, 1, delay=30)
    b = local_client.submit(inc, a)
    a.cancel("not needed")
    with pytest.raises(JobFailed) as caught:
        b.result(timeout=60)
    assert "cancelled" in caught.value.message and a.job_id in caught.value.message


def test_a_downstream_cancelled_while_it_waits_never_runs(local_client):
    a = local_client.submit(slowinc, 1, delay=30, scheduler="threads")
    b = local_client.submit(inc, a, scheduler="threads")
    assert b.cancel("changed my mind")
    info = b.info()
    assert info.state is JobState.CANCELLED and info.started is None
    a.cancel()
    assert local_client.submit(inc, 1, scheduler="threads").result(timeout=60) == 2


def test_a_downstream_waits_queued_for_a_running_upstream(local_client):
    a = local_client.submit(slowinc, 1, delay=2, scheduler="threads")
    b = local_client.submit(inc, a, scheduler="threads")
    info = b.info()
    assert info.state is JobState.QUEUED and info.depends_on == (a.job_id,)
    assert b.result(timeout=60) == 3
    assert a.done()


def test_a_released_result_cannot_be_an_input(local_client):
    a = local_client.submit(inc, 1)
    assert a.result(timeout=60) == 2
    a.release()
    with pytest.raises(FailedPrecondition) as caught:
        local_client.submit(inc, a)
    assert caught.value.reason == "UPSTREAM_RESULT_GONE" and a.job_id in str(caught.value)


def test_releasing_a_result_in_use_is_refused_naming_the_dependents(local_client):
    a = local_client.submit(inc, 1, scheduler="threads")
    assert a.result(timeout=60) == 2
    gate = local_client.submit(slowinc, 0, delay=3, scheduler="threads")
    b = local_client.submit(lambda x, _: x + 1, a, gate, scheduler="threads")
    with pytest.raises(FailedPrecondition) as caught:
        a.release()
    assert caught.value.reason == "RESULT_IN_USE" and b.job_id in str(caught.value)
    assert b.result(timeout=60) == 3
    a.release()


def test_named_calls_take_job_markers(local_client):
    a = local_client.submit_function("add", 2, 3)
    b = local_client.submit_function("add", a, 10)
    assert b.result(timeout=60) == 15
    assert b.info().depends_on == (a.job_id,)


def test_another_callers_job_is_not_found(tmp_path):
    tokens = (
        "alice run,code alice-token-0123456789\n"
        "bob run,code bob-token-0123456789\n"
        "root run,code,admin root-token-0123456789\n"
    )
    settings = local_settings(tmp_path, tokens=tokens, n_workers=1, local_processes=1)
    with serving_in_process(settings) as srv:
        with (
            ComputeClient(srv.target, token="alice-token-0123456789", timeout=60) as alice,
            ComputeClient(srv.target, token="bob-token-0123456789", timeout=60) as bob,
            ComputeClient(srv.target, token="root-token-0123456789", timeout=60) as root,
        ):
            a = alice.submit(inc, 1)
            assert a.result(timeout=60) == 2
            with pytest.raises(JobNotFound):
                bob.submit(inc, a)
            with pytest.raises(JobNotFound):
                bob.submit_function("add", a, 1)
            assert alice.submit(inc, a).result(timeout=60) == 3
            assert root.submit(inc, a).result(timeout=60) == 3  # an admin may use any job


def _metric(port: int, name: str, **labels: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{re.escape(name)}(\{{.*\}})? ([0-9.e+-]+)$", line)
        if match and all(f'{k}="{v}"' in (match.group(1) or "") for k, v in labels.items()):
            total += float(match.group(2))
    return total


def test_on_distributed_the_data_never_passes_through_the_server(tmp_path):
    port = free_port()
    args = ["--n-workers", "2", "--threads-per-worker", "1", "--dashboard-address", ""]
    args += ["--local-processes", "1", "--metrics-port", str(port)]
    size = 4_000_000  # 32 MB of float64 at each step
    with (
        running_server(args, tmp_path / "server.log") as srv,
        ComputeClient(srv.target, timeout=120) as client,
    ):
        for scheduler in ("distributed", "threads"):
            before_rpc = _metric(port, "dask_compute_received_bytes_total") + _metric(
                port, "dask_compute_sent_bytes_total"
            )
            a = client.submit(np.ones, size, scheduler=scheduler)
            b = client.submit(np.add, a, 1, scheduler=scheduler)
            c = client.submit(np.sum, b, scheduler=scheduler)
            assert c.result(timeout=120) == 2 * size
            rpc = (
                _metric(port, "dask_compute_received_bytes_total")
                + _metric(port, "dask_compute_sent_bytes_total")
                - before_rpc
            )
            inputs = _metric(port, "dask_compute_job_input_bytes_total", scheduler=scheduler)
            assert rpc < 1_000_000, (scheduler, rpc)
            if scheduler == "distributed":
                assert inputs == 0
            else:  # the local schedulers take the values from where they are held
                assert inputs >= 2 * size * 8


def test_a_calls_own_key_and_pure_keywords_are_its_own_on_distributed(local_client):
    job = local_client.submit(lambda key, pure: (key, pure), key=5, pure=6, scheduler="distributed")
    assert job.result(timeout=60) == (5, 6)
