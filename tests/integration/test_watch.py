"""WatchJob streams a job's state and Dask task progress until it finishes."""

from __future__ import annotations

import cloudpickle
import dask
import grpc
import pytest

from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk._proto.compute.v1 import compute_pb2_grpc as pb_grpc
from tests.helpers import error_info, slowinc

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stub(local_server):
    channel = grpc.insecure_channel(local_server.target)
    yield pb_grpc.ComputeServiceStub(channel)
    channel.close()


@pytest.mark.parametrize("scheduler", [pb.SCHEDULER_DISTRIBUTED, pb.SCHEDULER_THREADS])
def test_watch_reports_increasing_progress_and_the_final_state(stub, scheduler):
    parts = [dask.delayed(slowinc)(i, delay=0.4) for i in range(6)]
    spec = pb.JobSpec(
        graph=pb.DaskGraph(payload=cloudpickle.dumps(dask.delayed(sum)(parts))), scheduler=scheduler
    )
    job = stub.SubmitJob(pb.SubmitJobRequest(job=spec), timeout=30).job
    updates = list(stub.WatchJob(pb.WatchJobRequest(job_id=job.job_id), timeout=60))
    assert updates[-1].job.state == pb.JOB_STATE_SUCCEEDED
    assert all(u.job.state != pb.JOB_STATE_SUCCEEDED for u in updates[:-1]), (
        "the stream ends at the end"
    )
    done = [u.progress.tasks_done for u in updates]
    assert done == sorted(done), f"progress went back: {done}"
    final = updates[-1].progress
    assert final.tasks_total >= 7 and final.tasks_done == final.tasks_total
    assert any(0 < u.progress.tasks_done < u.progress.tasks_total for u in updates), [
        (u.progress.tasks_done, u.progress.tasks_total) for u in updates
    ]


def test_watch_a_finished_job_and_a_failed_one(stub):
    done = stub.Run(
        pb.RunRequest(job=pb.JobSpec(call=pb.FunctionCall(function="ping"))), timeout=30
    ).job
    updates = list(stub.WatchJob(pb.WatchJobRequest(job_id=done.job_id), timeout=30))
    assert len(updates) == 1 and updates[0].job.state == pb.JOB_STATE_SUCCEEDED
    assert (updates[0].progress.tasks_done, updates[0].progress.tasks_total) == (1, 1)
    spec = pb.JobSpec(call=pb.FunctionCall(function="fail"))
    spec.call.args.append("nope")
    failed = stub.SubmitJob(pb.SubmitJobRequest(job=spec), timeout=30).job
    last = list(stub.WatchJob(pb.WatchJobRequest(job_id=failed.job_id), timeout=30))[-1]
    assert last.job.state == pb.JOB_STATE_FAILED and last.job.error.message == "nope"


def test_watch_unknown_job_is_not_found(stub):
    with pytest.raises(grpc.RpcError) as info:
        list(stub.WatchJob(pb.WatchJobRequest(job_id="f" * 32), timeout=30))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_info(info.value).reason == "JOB_NOT_FOUND"
