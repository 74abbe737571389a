"""Every RPC of compute.v1.ComputeService through raw gRPC stubs against the real server."""

from __future__ import annotations

import operator
import pickle

import cloudpickle
import dask.array as da
import dask.bag as db
import dask.delayed
import grpc
import pytest
from google.protobuf import json_format, struct_pb2

from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk._proto.compute.v1 import compute_pb2_grpc as pb_grpc
from tests.helpers import error_info, inc, slowinc

pytestmark = pytest.mark.integration

SCHEDULERS = {
    "distributed": pb.SCHEDULER_DISTRIBUTED,
    "threads": pb.SCHEDULER_THREADS,
    "processes": pb.SCHEDULER_PROCESSES,
    "synchronous": pb.SCHEDULER_SYNCHRONOUS,
}


@pytest.fixture(scope="module")
def stub(local_server):
    channel = grpc.insecure_channel(local_server.target)
    grpc.channel_ready_future(channel).result(timeout=30)
    yield pb_grpc.ComputeServiceStub(channel)
    channel.close()


def named(function, args=(), kwargs=None, scheduler=pb.SCHEDULER_UNSPECIFIED, **extra):
    spec = pb.JobSpec(scheduler=scheduler, **extra)
    spec.call.function = function
    spec.call.args.extend(list(args))
    if kwargs:
        spec.call.kwargs.update(kwargs)
    return spec


def pickled_call(func, *args, scheduler=pb.SCHEDULER_UNSPECIFIED, **kwargs):
    return pb.JobSpec(
        pickled_call=pb.PickledCall(payload=cloudpickle.dumps((func, args, kwargs))),
        scheduler=scheduler,
    )


def graph(obj, scheduler=pb.SCHEDULER_UNSPECIFIED):
    return pb.JobSpec(graph=pb.DaskGraph(payload=cloudpickle.dumps(obj)), scheduler=scheduler)


def run(stub, spec, timeout=60):
    return stub.Run(pb.RunRequest(job=spec), timeout=timeout)


def value_of(response):
    assert response.job.state == pb.JOB_STATE_SUCCEEDED, response.job.error
    if response.result.WhichOneof("value") == "json":
        return json_format.MessageToDict(response.result.json)
    return pickle.loads(response.result.pickle)


def status_of(call, *args, **kwargs):
    with pytest.raises(grpc.RpcError) as info:
        call(*args, timeout=30, **kwargs)
    return info.value.code(), info.value.details()


def test_get_cluster_info_matches_the_flags(stub):
    info = stub.GetClusterInfo(pb.GetClusterInfoRequest(), timeout=30)
    cluster = info.cluster
    assert cluster.n_workers == 2 and cluster.total_threads == 4
    assert cluster.worker_type == pb.WORKER_TYPE_PROCESSES
    assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
    assert cluster.dashboard_link.startswith("http://127.0.0.1:")
    assert len(cluster.workers) == 2
    assert all(
        w.nthreads == 2 and w.memory_limit_bytes > 0 and w.memory_bytes > 0 for w in cluster.workers
    )
    assert cluster.total_memory_bytes == sum(w.memory_limit_bytes for w in cluster.workers)
    assert list(info.schedulers) == list(SCHEDULERS.values())
    assert info.default_scheduler == pb.SCHEDULER_DISTRIBUTED
    import cloudpickle as cp
    import dask
    import distributed

    assert info.versions.dask == dask.__version__
    assert info.versions.distributed == distributed.__version__
    assert info.versions.cloudpickle == cp.__version__
    assert info.versions.python.count(".") == 2 and info.versions.service


def test_list_functions_shows_how_to_call_them(stub):
    functions = {
        f.name: f for f in stub.ListFunctions(pb.ListFunctionsRequest(), timeout=30).functions
    }
    assert {"ping", "add", "sleep", "pi", "fib", "scale", "greet"} <= set(functions)
    pi = functions["pi"]
    params = {p.name: p for p in pi.parameters}
    assert params["samples"].type == "integer" and not params["samples"].required
    assert params["samples"].default.number_value == 1_000_000
    assert params["seed"].type == "integer|null"
    assert params["seed"].default.WhichOneof("kind") == "null_value"
    assert "Monte Carlo" in pi.description
    greet = functions["greet"]
    assert [(p.name, p.required, p.keyword_only) for p in greet.parameters] == [
        ("name", True, False),
        ("punctuation", False, True),
    ]
    assert functions["add"].signature == "add(a: number, b: number) -> number"


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_named_pickled_and_graph_jobs_on_each_scheduler(stub, scheduler):
    number = SCHEDULERS[scheduler]
    response = run(stub, named("add", [2, 3], scheduler=number))
    assert response.job.scheduler == number
    assert response.result.format == pb.RESULT_FORMAT_JSON and value_of(response) == 5
    assert response.cluster.n_workers == 2
    response = run(
        stub, named("pi", kwargs={"samples": 50_000, "chunks": 10_000, "seed": 7}, scheduler=number)
    )
    assert 2.9 < value_of(response) < 3.4
    response = run(stub, named("scale", [[1, 2.5]], {"factor": 3}, scheduler=number))
    assert value_of(response) == [3, 7.5]
    response = run(stub, pickled_call(inc, 1, scheduler=number))
    assert response.result.format == pb.RESULT_FORMAT_PICKLE and value_of(response) == 2
    assert (
        response.job.kind == pb.JOB_KIND_PICKLED_CALL and response.job.target == "tests.helpers.inc"
    )
    x = da.ones((100, 100), chunks=(25, 25))
    assert value_of(run(stub, graph((x + x.T).sum(), scheduler=number))) == 20_000
    bag = db.from_sequence(range(10), npartitions=2).map(inc).filter(lambda v: v % 2 == 0)
    pipeline = dask.delayed(sum)([dask.delayed(inc)(i) for i in range(5)])
    assert value_of(run(stub, graph((bag.sum(), pipeline), scheduler=number))) == (30, 15)
    dsk = {"a": 1, "b": (operator.add, "a", 1)}
    assert value_of(run(stub, graph((dsk, "b"), scheduler=number))) == 2


def test_fib_on_processes(stub):
    assert value_of(run(stub, named("fib", [20], scheduler=pb.SCHEDULER_PROCESSES))) == 6765


def test_job_record_has_times_and_no_error(stub):
    job = run(stub, named("ping")).job
    assert job.job_id and job.target == "ping" and job.kind == pb.JOB_KIND_FUNCTION
    assert job.scheduler == pb.SCHEDULER_DISTRIBUTED
    assert (
        job.submit_time.ToNanoseconds()
        <= job.start_time.ToNanoseconds()
        <= job.finish_time.ToNanoseconds()
    )
    assert not job.HasField("error") and job.result_available


def test_failed_job_is_not_an_rpc_error(stub):
    response = run(stub, named("fail", ["no good"]))
    assert response.job.state == pb.JOB_STATE_FAILED
    assert response.job.error.type == "builtins.ValueError"
    assert response.job.error.message == "no good"
    assert "raise ValueError(message)" in response.job.error.traceback
    assert isinstance(pickle.loads(response.job.error.pickled_exception), ValueError)
    assert not response.HasField("result")


def test_submit_get_wait_list_cancel(stub):
    submitted = stub.SubmitJob(
        pb.SubmitJobRequest(job=pickled_call(slowinc, 1, delay=0.5)), timeout=30
    ).job
    assert submitted.state == pb.JOB_STATE_QUEUED
    got = stub.GetJob(pb.GetJobRequest(job_id=submitted.job_id), timeout=30).job
    assert got.job_id == submitted.job_id and got.state in (
        pb.JOB_STATE_QUEUED,
        pb.JOB_STATE_RUNNING,
    )
    waited = stub.WaitJob(pb.WaitJobRequest(job_id=submitted.job_id), timeout=30)
    assert not waited.timed_out and waited.job.state == pb.JOB_STATE_SUCCEEDED
    assert pickle.loads(waited.result.pickle) == 2

    slow = stub.SubmitJob(
        pb.SubmitJobRequest(job=named("sleep", [5], scheduler=pb.SCHEDULER_THREADS)), timeout=30
    ).job
    request = pb.WaitJobRequest(job_id=slow.job_id)
    request.timeout.FromMilliseconds(200)
    waited = stub.WaitJob(request, timeout=30)
    assert (
        waited.timed_out
        and waited.job.state == pb.JOB_STATE_RUNNING
        and not waited.HasField("result")
    )
    running = stub.ListJobs(
        pb.ListJobsRequest(states=[pb.JOB_STATE_RUNNING], page_size=1000), timeout=30
    )
    assert slow.job_id in {j.job_id for j in running.jobs}
    cancelled = stub.CancelJob(pb.CancelJobRequest(job_id=slow.job_id, reason="enough"), timeout=30)
    assert cancelled.cancelled and cancelled.job.state == pb.JOB_STATE_CANCELLED
    assert cancelled.job.cancel_reason == "enough"
    again = stub.CancelJob(pb.CancelJobRequest(job_id=slow.job_id), timeout=30)
    assert not again.cancelled and again.job.state == pb.JOB_STATE_CANCELLED
    listed = stub.ListJobs(
        pb.ListJobsRequest(states=[pb.JOB_STATE_CANCELLED], page_size=1000), timeout=30
    )
    assert slow.job_id in {j.job_id for j in listed.jobs}


def test_submit_jobs_batch_and_paging(stub):
    specs = [pickled_call(inc, i, scheduler=pb.SCHEDULER_THREADS) for i in range(30)]
    jobs = stub.SubmitJobs(pb.SubmitJobsRequest(jobs=specs), timeout=30).jobs
    assert len(jobs) == 30
    values = [
        pickle.loads(stub.WaitJob(pb.WaitJobRequest(job_id=j.job_id), timeout=30).result.pickle)
        for j in jobs
    ]
    assert values == list(range(1, 31))
    ids, token, pages = [], "", 0
    while True:
        page = stub.ListJobs(pb.ListJobsRequest(page_size=7, page_token=token), timeout=30)
        ids.extend(j.job_id for j in page.jobs)
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert pages > 4 and len(ids) == len(set(ids))
    ours = [j.job_id for j in jobs]
    assert [i for i in ids if i in set(ours)] == ours[::-1], "newest first"


def test_wait_result_format(stub):
    job = stub.SubmitJob(pb.SubmitJobRequest(job=named("add", [1, 2])), timeout=30).job
    as_pickle = stub.WaitJob(
        pb.WaitJobRequest(job_id=job.job_id, result_format=pb.RESULT_FORMAT_PICKLE), timeout=30
    )
    assert pickle.loads(as_pickle.result.pickle) == 3
    as_json = stub.WaitJob(pb.WaitJobRequest(job_id=job.job_id), timeout=30)
    assert as_json.result.json.number_value == 3


def test_not_json_result_falls_back_to_pickle_or_fails_precondition(stub):
    response = run(stub, named("not_json"))
    assert response.result.format == pb.RESULT_FORMAT_PICKLE
    assert pickle.loads(response.result.pickle) == {1, 2, 3}
    code, details = status_of(
        stub.Run, pb.RunRequest(job=named("not_json", result_format=pb.RESULT_FORMAT_JSON))
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "no JSON form" in details


@pytest.mark.parametrize(
    "spec, code, fragment",
    [
        (
            named("nope"),
            grpc.StatusCode.NOT_FOUND,
            "no function named 'nope'; this server offers: add,",
        ),
        (
            named("add", [1]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "missing required argument 'b'; signature: add(a: number, b: number)",
        ),
        (
            named("add", [1, 2, 3]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "takes 2 positional arguments but 3 were given",
        ),
        (
            named("add", [1], {"c": 1}),
            grpc.StatusCode.INVALID_ARGUMENT,
            "unexpected keyword argument 'c'",
        ),
        (
            named("fib", [20.5]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "argument 'n' must be integer: expected an integer, got number 20.5",
        ),
        (named("fib", ["a"]), grpc.StatusCode.INVALID_ARGUMENT, "got string 'a'"),
        (named(""), grpc.StatusCode.INVALID_ARGUMENT, "call.function is required"),
        (pb.JobSpec(), grpc.StatusCode.INVALID_ARGUMENT, "job has no work"),
        (
            named("ping", scheduler=99),
            grpc.StatusCode.INVALID_ARGUMENT,
            "scheduler 99 is not one of",
        ),
        (named("ping", result_format=42), grpc.StatusCode.INVALID_ARGUMENT, "result_format 42"),
        (
            pb.JobSpec(pickled_call=pb.PickledCall(payload=b"not a pickle")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "cannot load the payload",
        ),
        (
            pb.JobSpec(pickled_call=pb.PickledCall(payload=cloudpickle.dumps("x"))),
            grpc.StatusCode.INVALID_ARGUMENT,
            "must be a (callable",
        ),
        (
            pb.JobSpec(graph=pb.DaskGraph(payload=cloudpickle.dumps(1))),
            grpc.StatusCode.INVALID_ARGUMENT,
            "must be a Dask collection",
        ),
        (
            pb.JobSpec(graph=pb.DaskGraph(payload=b"")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "payload is empty",
        ),
        (
            pb.JobSpec(pickled_call=pb.PickledCall(payload=b"\x80\x05c__nomodule__\nthing\n.")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "module '__nomodule__' is not installed on the server",
        ),
    ],
)
def test_bad_jobs_get_clear_status_codes(stub, spec, code, fragment):
    for rpc in (
        lambda: stub.Run(pb.RunRequest(job=spec), timeout=30),
        lambda: stub.SubmitJob(pb.SubmitJobRequest(job=spec), timeout=30),
    ):
        with pytest.raises(grpc.RpcError) as info:
            rpc()
        assert info.value.code() == code
        assert fragment in info.value.details()


@pytest.mark.parametrize("rpc", ["GetJob", "WaitJob", "CancelJob"])
def test_unknown_job_id_is_not_found(stub, rpc):
    request = getattr(pb, f"{rpc}Request")(job_id="0123456789abcdef0123456789abcdef")
    code, details = status_of(getattr(stub, rpc), request)
    assert code == grpc.StatusCode.NOT_FOUND and "no job with id" in details
    code, details = status_of(getattr(stub, rpc), getattr(pb, f"{rpc}Request")(job_id=""))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "job_id is required" in details


def test_list_jobs_validation(stub):
    code, details = status_of(stub.ListJobs, pb.ListJobsRequest(page_size=5000))
    assert (
        code == grpc.StatusCode.INVALID_ARGUMENT
        and "page_size must be between 0 and 1000" in details
    )
    code, details = status_of(stub.ListJobs, pb.ListJobsRequest(page_token="forged"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "page_token is not valid" in details
    code, details = status_of(stub.ListJobs, pb.ListJobsRequest(states=[17]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "state 17" in details


def test_negative_wait_timeout(stub):
    job = run(stub, named("ping")).job
    request = pb.WaitJobRequest(job_id=job.job_id)
    request.timeout.seconds = -1
    code, details = status_of(stub.WaitJob, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "timeout must not be negative" in details


def test_submit_jobs_refuses_bad_batches_whole(stub):
    before = stub.ListJobs(pb.ListJobsRequest(page_size=1), timeout=30).jobs[0].job_id
    code, details = status_of(
        stub.SubmitJobs, pb.SubmitJobsRequest(jobs=[named("ping"), named("nope")])
    )
    assert code == grpc.StatusCode.NOT_FOUND and details.startswith(
        "jobs[1]: no function named 'nope'"
    )
    assert stub.ListJobs(pb.ListJobsRequest(page_size=1), timeout=30).jobs[0].job_id == before
    code, details = status_of(stub.SubmitJobs, pb.SubmitJobsRequest())
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "jobs is empty" in details


def test_error_reason_is_in_the_status_details(stub):
    with pytest.raises(grpc.RpcError) as info:
        stub.GetJob(pb.GetJobRequest(job_id="f" * 32), timeout=30)
    found = error_info(info.value)
    assert (found.reason, found.domain) == ("JOB_NOT_FOUND", "compute.v1")
    assert dict(found.metadata) == {"job_id": "f" * 32}


def test_json_values_round_trip_through_struct(stub):
    kwargs = struct_pb2.Struct()
    kwargs.update({"name": "ünïcode ✓", "punctuation": "?"})
    spec = pb.JobSpec(call=pb.FunctionCall(function="greet", kwargs=kwargs))
    assert value_of(run(stub, spec)) == "hello ünïcode ✓?"
