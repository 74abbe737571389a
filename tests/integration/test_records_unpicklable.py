"""A job whose result cannot be pickled (a generator, a lock) fails with a TypeError that
names the result's type, on ``threads``, ``synchronous`` and ``distributed`` alike (on
``distributed`` a call's result is checked on the worker, in its task): it is never a success
whose result no call can answer (INTERNAL or FAILED_PRECONDITION later), and in a WaitJobs
batch it does not sink the others. A result that only lacks the form asked for (JSON) is
still a success, answered FAILED_PRECONDITION in that form, as before. Against the
session's in-process server, through the real SDK and raw stubs."""

from __future__ import annotations

import pickle
import threading

import cloudpickle
import dask
import grpc
import pytest

from client_sdk import JobState
from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk._proto.compute.v1 import compute_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration

LOCAL = ["threads", "synchronous"]
#: Where a call's result is checked: the local pools, and the cluster's workers.
CALLS = [*LOCAL, "distributed"]
SCHEDULERS = {
    "threads": pb.SCHEDULER_THREADS,
    "synchronous": pb.SCHEDULER_SYNCHRONOUS,
    "distributed": pb.SCHEDULER_DISTRIBUTED,
}


@pytest.fixture(scope="module")
def stub(local_server):
    channel = grpc.insecure_channel(local_server.target)
    yield pb_grpc.ComputeServiceStub(channel)
    channel.close()


def generator():
    return (i for i in range(3))


def lock():
    return threading.Lock()


def a_set():
    return {1, 2}


def answer(value):
    return value


def spec(func, *args, scheduler="threads", fmt=pb.RESULT_FORMAT_UNSPECIFIED):
    payload = cloudpickle.dumps((func, args, {}))
    return pb.JobSpec(
        pickled_call=pb.PickledCall(payload=payload),
        scheduler=SCHEDULERS[scheduler],
        result_format=fmt,
    )


def assert_unpicklable(error, type_name):
    assert error.type == "builtins.TypeError", (error.type, error.message)
    assert "cannot be pickled" in error.message and type_name in error.message, error.message


@pytest.mark.parametrize("scheduler", CALLS)
@pytest.mark.parametrize(("func", "type_name"), [(generator, "generator"), (lock, "lock")])
def test_the_job_fails_with_a_type_error(local_client, scheduler, func, type_name):
    job = local_client.submit(func, scheduler=scheduler)
    with pytest.raises(TypeError, match="cannot be pickled"):
        job.result(timeout=60)
    info = job.info()
    assert info.state is JobState.FAILED and not info.result_available
    assert_unpicklable(info.error, type_name)


@pytest.mark.parametrize("scheduler", CALLS)
def test_run_answers_the_job_failed(stub, scheduler):
    reply = stub.Run(pb.RunRequest(job=spec(generator, scheduler=scheduler)), timeout=60)
    assert reply.job.state == pb.JOB_STATE_FAILED
    assert_unpicklable(reply.job.error, "generator")
    assert not reply.HasField("result")


@pytest.mark.parametrize("scheduler", LOCAL)
def test_a_dask_collection_computing_to_a_generator(local_client, scheduler):
    with pytest.raises(TypeError, match="cannot be pickled.*generator"):
        local_client.compute(dask.delayed(generator)(), scheduler=scheduler, timeout=60)


@pytest.mark.parametrize("scheduler", CALLS)
def test_wait_jobs_answers_for_all_three(stub, scheduler):
    specs = [spec(answer, 1, scheduler=scheduler), spec(generator, scheduler=scheduler)]
    specs.append(spec(answer, 3, scheduler=scheduler))
    ids = [j.job_id for j in stub.SubmitJobs(pb.SubmitJobsRequest(jobs=specs), timeout=30).jobs]
    got = {}
    while len(got) < 3:
        reply = stub.WaitJobs(
            pb.WaitJobsRequest(job_ids=[i for i in ids if i not in got]), timeout=60
        )
        got.update((e.job.job_id, e) for e in reply.jobs)
    assert pickle.loads(got[ids[0]].result.pickle) == 1
    assert pickle.loads(got[ids[2]].result.pickle) == 3
    bad = got[ids[1]]
    assert bad.job.state == pb.JOB_STATE_FAILED and not bad.HasField("result")
    assert_unpicklable(bad.job.error, "generator")


def test_results_that_can_be_pickled_still_succeed(local_client):
    big = list(range(100_000))
    assert local_client.submit(answer, big, scheduler="threads").result(timeout=60) == big
    job = local_client.submit(answer, {"a": [1, 2.5, "x"]}, scheduler="synchronous")
    assert job.result(timeout=60) == {"a": [1, 2.5, "x"]}


def test_json_asked_for_a_value_without_one_is_the_answer_s_problem(stub):
    """As before: the job succeeds (its result can be pickled), JSON is refused,
    the pickle is there. Only a result that has no form at all fails the job."""
    job = spec(a_set, fmt=pb.RESULT_FORMAT_JSON)
    with pytest.raises(grpc.RpcError) as info:
        stub.Run(pb.RunRequest(job=job), timeout=60)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no JSON form" in info.value.details()
    job_id = stub.SubmitJob(pb.SubmitJobRequest(job=job), timeout=30).job.job_id
    reply = stub.WaitJob(
        pb.WaitJobRequest(job_id=job_id, result_format=pb.RESULT_FORMAT_PICKLE), timeout=60
    )
    assert reply.job.state == pb.JOB_STATE_SUCCEEDED
    assert pickle.loads(reply.result.pickle) == {1, 2}
    neither = stub.Run(
        pb.RunRequest(job=spec(generator, fmt=pb.RESULT_FORMAT_JSON)), timeout=60
    ).job
    assert neither.state == pb.JOB_STATE_FAILED
    assert_unpicklable(neither.error, "generator")
