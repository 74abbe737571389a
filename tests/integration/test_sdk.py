"""Every method of the blocking client against the session's real server and LocalCluster."""

from __future__ import annotations

import re

import pytest

from client_sdk import (
    SCHEDULERS,
    ComputeClient,
    ComputeError,
    FunctionInfo,
    Job,
    JobInfo,
    JobState,
)
from tests.helpers import inc, slowinc

pytestmark = pytest.mark.integration


def add_pair(x, y, *, z=0):
    return x + y + z


def test_repr_reads_like_dask(client: ComputeClient, server) -> None:
    text = repr(client)
    assert re.fullmatch(
        rf"<ComputeClient: 'grpc://{re.escape(server.target)}' "
        r"workers=2 threads=4, memory=\d+\.\d\d GiB>",
        text,
    ), text


def test_info_describes_the_cluster_and_the_server(client: ComputeClient) -> None:
    import dask

    info = client.info()
    assert (info.n_workers, info.total_threads, info.worker_type) == (2, 4, "processes")
    assert len(info.workers) == 2 and all(w.nthreads == 2 for w in info.workers)
    assert info.total_memory == sum(w.memory_limit for w in info.workers) > 0
    assert info.dashboard_link.startswith("http://")
    assert info.versions.dask == dask.__version__
    assert info.schedulers == SCHEDULERS and info.default_scheduler == "distributed"


def test_functions_lists_the_named_functions(client: ComputeClient) -> None:
    functions = {f.name: f for f in client.functions()}
    assert {"add", "ping", "fib", "greet", "scale"} <= set(functions)
    greet = functions["greet"]
    assert isinstance(greet, FunctionInfo)
    assert [(p.name, p.required, p.keyword_only) for p in greet.parameters] == [
        ("name", True, False),
        ("punctuation", False, True),
    ]
    assert greet.parameters[1].default == "!"


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_run_calls_a_named_function_on_each_scheduler(
    client: ComputeClient, scheduler: str
) -> None:
    assert client.run("add", 2, 3, scheduler=scheduler) == 5
    assert client.run("greet", "dask", punctuation="?", scheduler=scheduler) == "hello dask?"


def test_run_keeps_python_types(client: ComputeClient) -> None:
    value = client.run("scale", [1, 2.5], factor=2)
    assert value == [2, 5.0] and isinstance(value, list)
    assert isinstance(client.run("fib", 10), int)


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_submit_runs_a_python_callable_on_each_scheduler(
    client: ComputeClient, scheduler: str
) -> None:
    job = client.submit(add_pair, 1, 2, z=3, scheduler=scheduler)
    assert isinstance(job, Job) and job.job_id
    assert job.result(timeout=60) == 6
    assert job.info().scheduler == scheduler


def test_submit_function_returns_a_job(client: ComputeClient) -> None:
    job = client.submit_function("add", 1, b=2, scheduler="threads")
    assert job.result(timeout=30) == 3
    assert job.info().kind == "function" and job.info().target == "add"


def test_map_submits_in_batches_and_keeps_order(client: ComputeClient) -> None:
    jobs = client.map(add_pair, range(25), range(100, 125), z=1, batch_size=10, scheduler="threads")
    assert len(jobs) == 25 and len({j.job_id for j in jobs}) == 25
    assert client.gather(jobs) == [i + 100 + i + 1 for i in range(25)]


def test_map_stops_at_the_shortest_iterable_and_gathers_one_job(client: ComputeClient) -> None:
    jobs = client.map(add_pair, [1, 2, 3], [10, 20])
    assert client.gather(jobs) == [11, 22]
    assert client.gather(jobs[0]) == 11


def test_get_job_and_job_attach_to_an_existing_job(client: ComputeClient) -> None:
    job = client.submit(inc, 41)
    assert job.result(timeout=30) == 42
    record = client.get_job(job.job_id)
    assert isinstance(record, JobInfo)
    assert record.state is JobState.SUCCEEDED and record.target == "tests.helpers.inc"
    assert record.duration is not None and record.duration >= 0
    again = client.job(job.job_id)
    assert again is not job and again.result(timeout=30) == 42


def test_wait_returns_the_finished_record(client: ComputeClient) -> None:
    job = client.submit(slowinc, 1, delay=0.3)
    record = client.wait(job.job_id, timeout=30)
    assert record.state is JobState.SUCCEEDED and record.result_available


def test_cancel_by_id(client: ComputeClient) -> None:
    job = client.submit(slowinc, 1, delay=10, scheduler="synchronous")
    assert client.cancel(job.job_id, reason="test over") is True
    record = client.get_job(job.job_id)
    assert record.state is JobState.CANCELLED and record.cancel_reason == "test over"
    done = client.submit(inc, 1)
    done.result(timeout=30)
    assert client.cancel(done.job_id) is False


def test_list_jobs_filters_by_state_and_limit(client: ComputeClient) -> None:
    cancelled = client.submit(slowinc, 1, delay=10, scheduler="synchronous")
    cancelled.cancel()
    newest = client.submit(inc, 1)
    newest.result(timeout=30)
    latest = list(client.list_jobs(limit=2))
    assert len(latest) == 2 and latest[0].job_id == newest.job_id
    only_cancelled = list(client.list_jobs(["cancelled"], limit=50))
    assert only_cancelled and all(j.state is JobState.CANCELLED for j in only_cancelled)
    assert cancelled.job_id in {j.job_id for j in only_cancelled}
    paged = list(client.list_jobs(limit=5, page_size=2))
    assert len(paged) == 5 and len({j.job_id for j in paged}) == 5


def test_a_closed_client_refuses_calls_and_lets_go_of_its_jobs(server) -> None:
    client = ComputeClient(server.target, timeout=30)
    with client:
        job = client.submit(slowinc, 1, delay=10, scheduler="synchronous")
    with pytest.raises(ComputeError, match="closed before job"):
        job.result(timeout=10)
    with pytest.raises(ComputeError, match="closed"):
        client.info()
    client.close()  # twice is fine
    with ComputeClient(server.target) as other:
        assert other.cancel(job.job_id) is True


def test_the_target_defaults_to_the_environment(server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DASK_COMPUTE_TARGET", f"grpc://{server.target}")
    with ComputeClient() as client:
        assert client.target == server.target
        assert client.run("ping") == "pong"


def test_a_retried_submission_runs_once(client: ComputeClient) -> None:
    # What makes gRPC's retries of Run, SubmitJob and SubmitJobs safe: every
    # spec carries a request_id, and the server runs a key at most once.
    from client_sdk import _convert
    from client_sdk._proto.compute.v1 import compute_pb2 as pb
    from client_sdk._sansio import Call

    spec = _convert.pickled_call_spec(inc, (1,), {}, "threads")
    first = client._invoke(Call("SubmitJob", pb.SubmitJobRequest(job=spec)))
    again = client._invoke(Call("SubmitJob", pb.SubmitJobRequest(job=spec)))
    assert first.job.job_id == again.job.job_id
    batch = client._invoke(Call("SubmitJobs", pb.SubmitJobsRequest(jobs=[spec])))
    assert batch.jobs[0].job_id == first.job.job_id
