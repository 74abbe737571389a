"""Results that cannot be encoded are answered with a code and a message a person can
act on, never INTERNAL; in a WaitJobs batch they do not sink the others. Against the
session's in-process server."""

from __future__ import annotations

import pickle

import cloudpickle
import grpc
import pandas as pd
import pytest

from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk._proto.compute.v1 import compute_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stub(local_server):
    channel = grpc.insecure_channel(local_server.target)
    yield pb_grpc.ComputeServiceStub(channel)
    channel.close()


def mixed_frame():
    return pd.DataFrame({"a": [1, "x"], "b": [1.0, 2.0]})


def generator():
    return (i for i in range(3))


def answer(value):
    return value


def spec(func, *args, scheduler=pb.SCHEDULER_THREADS, fmt=pb.RESULT_FORMAT_UNSPECIFIED):
    payload = cloudpickle.dumps((func, args, {}))
    return pb.JobSpec(
        pickled_call=pb.PickledCall(payload=payload), scheduler=scheduler, result_format=fmt
    )


def refused(call):
    with pytest.raises(grpc.RpcError) as info:
        call()
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION, info.value.details()
    return info.value.details()


@pytest.mark.parametrize("scheduler", [pb.SCHEDULER_THREADS, pb.SCHEDULER_DISTRIBUTED])
def test_an_arrow_result_with_a_column_of_mixed_types(stub, scheduler):
    job = spec(mixed_frame, scheduler=scheduler, fmt=pb.RESULT_FORMAT_ARROW)
    details = refused(lambda: stub.Run(pb.RunRequest(job=job), timeout=60))
    assert (
        "no Arrow form" in details and "column a" in details and "RESULT_FORMAT_PICKLE" in details
    )
    # The same job's result, asked for as a pickle, is there.
    submitted = stub.SubmitJob(pb.SubmitJobRequest(job=job), timeout=30).job
    stub.WaitJob(
        pb.WaitJobRequest(job_id=submitted.job_id, result_format=pb.RESULT_FORMAT_PICKLE),
        timeout=60,
    )
    streamed = refused(
        lambda: list(stub.GetJobResult(pb.GetJobResultRequest(job_id=submitted.job_id), timeout=30))
    )
    assert "no Arrow form" in streamed


def test_a_result_that_cannot_be_pickled(stub):
    details = refused(lambda: stub.Run(pb.RunRequest(job=spec(generator)), timeout=60))
    assert "cannot be pickled" in details and "generator" in details


def test_wait_jobs_answers_for_the_others(stub):
    jobs = stub.SubmitJobs(
        pb.SubmitJobsRequest(jobs=[spec(answer, 1), spec(generator), spec(answer, 3)]), timeout=30
    ).jobs
    ids = [j.job_id for j in jobs]
    got = {}
    while len(got) < 3:
        reply = stub.WaitJobs(
            pb.WaitJobsRequest(job_ids=[i for i in ids if i not in got]), timeout=60
        )
        got.update((e.job.job_id, e) for e in reply.jobs)
    assert pickle.loads(got[ids[0]].result.pickle) == 1
    assert pickle.loads(got[ids[2]].result.pickle) == 3
    bad = got[ids[1]]
    assert bad.job.state == pb.JOB_STATE_SUCCEEDED and bad.result.streamed
    details = refused(
        lambda: list(stub.GetJobResult(pb.GetJobResultRequest(job_id=ids[1]), timeout=30))
    )
    assert "cannot be pickled" in details and "generator" in details
