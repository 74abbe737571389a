"""Deadlines, idempotent retries, time limits, instance ids and a crashing pool process."""

from __future__ import annotations

import ctypes
import os
import pickle
import time
import uuid

import cloudpickle
import grpc
import pytest

from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk._proto.compute.v1 import compute_pb2_grpc as pb_grpc
from tests.helpers import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stub(local_server):
    channel = grpc.insecure_channel(local_server.target)
    grpc.channel_ready_future(channel).result(timeout=30)
    yield pb_grpc.ComputeServiceStub(channel)
    channel.close()


def sleep_spec(seconds, scheduler=pb.SCHEDULER_DISTRIBUTED, **extra):
    spec = pb.JobSpec(call=pb.FunctionCall(function="sleep"), scheduler=scheduler, **extra)
    spec.call.args.append(seconds)
    return spec


def find_job(stub, predicate, what, timeout=10):
    """The first of the newest 50 jobs that ``predicate`` accepts, once there is one."""

    def found():
        jobs = stub.ListJobs(pb.ListJobsRequest(page_size=50), timeout=10).jobs
        return next((job for job in jobs if predicate(job)), None)

    return wait_until(found, timeout=timeout, message=what)


@pytest.mark.parametrize("scheduler", [pb.SCHEDULER_DISTRIBUTED, pb.SCHEDULER_THREADS])
def test_run_past_its_deadline_cancels_the_job(stub, scheduler):
    label = f"deadline-{uuid.uuid4().hex}"
    with pytest.raises(grpc.RpcError) as info:
        stub.Run(pb.RunRequest(job=sleep_spec(4, scheduler, name=label)), timeout=1.0)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    job = find_job(
        stub, lambda j: j.name == label and j.state == pb.JOB_STATE_CANCELLED, "it cancelled"
    )
    assert job.cancel_reason == "the deadline of the Run call passed"


def test_run_whose_caller_disconnects_cancels_the_job(stub, local_server):
    label = f"gone-{uuid.uuid4().hex}"
    channel = grpc.insecure_channel(local_server.target)
    future = pb_grpc.ComputeServiceStub(channel).Run.future(
        pb.RunRequest(job=sleep_spec(4, name=label)), timeout=60
    )
    find_job(stub, lambda j: j.name == label and j.state == pb.JOB_STATE_RUNNING, "it running")
    future.cancel()
    channel.close()
    job = find_job(
        stub, lambda j: j.name == label and j.state == pb.JOB_STATE_CANCELLED, "it cancelled"
    )
    assert job.cancel_reason == "the caller of Run went away"


def test_idempotent_retry_returns_the_first_job(stub):
    key = uuid.uuid4().hex
    spec = pb.JobSpec(
        pickled_call=pb.PickledCall(payload=cloudpickle.dumps((uuid.uuid4, (), {}))),
        scheduler=pb.SCHEDULER_THREADS,
        request_id=key,
    )
    first = stub.SubmitJob(pb.SubmitJobRequest(job=spec), timeout=30).job
    again = stub.SubmitJob(pb.SubmitJobRequest(job=spec), timeout=30).job
    run = stub.Run(pb.RunRequest(job=spec), timeout=30)
    assert first.job_id == again.job_id == run.job.job_id
    assert run.job.request_id == key
    value = pickle.loads(run.result.pickle)
    assert isinstance(value, uuid.UUID), "the work ran once, and its one result is returned"
    other = stub.SubmitJob(
        pb.SubmitJobRequest(
            job=pb.JobSpec(
                pickled_call=spec.pickled_call,
                scheduler=pb.SCHEDULER_THREADS,
                request_id=uuid.uuid4().hex,
            )
        ),
        timeout=30,
    ).job
    assert other.job_id != first.job_id
    too_long = pb.JobSpec(call=pb.FunctionCall(function="ping"), request_id="x" * 200)
    with pytest.raises(grpc.RpcError) as info:
        stub.SubmitJob(pb.SubmitJobRequest(job=too_long), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("scheduler", [pb.SCHEDULER_DISTRIBUTED, pb.SCHEDULER_THREADS])
def test_job_past_its_time_limit_fails_with_a_timeout(stub, scheduler):
    spec = sleep_spec(4, scheduler)  # short: Dask cannot stop a running task's thread
    spec.timeout.FromMilliseconds(500)
    started = time.monotonic()
    job = stub.Run(pb.RunRequest(job=spec), timeout=30).job
    assert time.monotonic() - started < 3
    assert job.state == pb.JOB_STATE_FAILED
    assert job.error.type == "TimeoutError"
    assert "time limit of 0.5s" in job.error.message


def test_every_response_names_the_server_instance(stub):
    _, call = stub.GetClusterInfo.with_call(pb.GetClusterInfoRequest(), timeout=30)
    first = dict(call.trailing_metadata())["dask-compute-instance"]
    _, call = stub.ListJobs.with_call(pb.ListJobsRequest(page_size=1), timeout=30)
    assert dict(call.trailing_metadata())["dask-compute-instance"] == first
    with pytest.raises(grpc.RpcError) as info:
        stub.GetJob(pb.GetJobRequest(job_id="f" * 32), timeout=30)
    assert dict(info.value.trailing_metadata())["dask-compute-instance"] == first
    assert len(first) == 32


def _die():
    os._exit(3)


def _segfault():
    ctypes.string_at(0)


@pytest.mark.parametrize("crash", [_die, _segfault], ids=["os._exit", "segfault"])
def test_processes_pool_survives_a_crashing_child(stub, crash):
    spec = pb.JobSpec(
        pickled_call=pb.PickledCall(payload=cloudpickle.dumps((crash, (), {}))),
        scheduler=pb.SCHEDULER_PROCESSES,
    )
    job = stub.Run(pb.RunRequest(job=spec), timeout=60).job
    assert job.state == pb.JOB_STATE_FAILED
    assert job.error.type == "server.execution.PoolProcessDied"
    assert "the pool was restarted" in job.error.message
    after = pb.JobSpec(call=pb.FunctionCall(function="fib"), scheduler=pb.SCHEDULER_PROCESSES)
    after.call.args.append(15)
    response = stub.Run(pb.RunRequest(job=after), timeout=60)
    assert response.job.state == pb.JOB_STATE_SUCCEEDED, response.job.error
    assert response.result.json.number_value == 610
