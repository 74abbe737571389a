"""One idempotency key, one job: repeats within a SubmitJobs batch, against the session's
in-process server."""

from __future__ import annotations

import uuid

import grpc
import pytest

from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk._proto.compute.v1 import compute_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stub(local_server):
    channel = grpc.insecure_channel(local_server.target)
    yield pb_grpc.ComputeServiceStub(channel)
    channel.close()


def add(request_id: str, a: int, b: int) -> pb.JobSpec:
    spec = pb.JobSpec(
        call=pb.FunctionCall(function="add"), scheduler=pb.SCHEDULER_THREADS, request_id=request_id
    )
    spec.call.args.extend([a, b])
    return spec


def test_a_batch_repeating_a_key_makes_one_job(stub):
    key, other = f"repeat-{uuid.uuid4()}", f"other-{uuid.uuid4()}"
    batch = [add(key, 1, 2), add(other, 3, 4), add(key, 1, 2), add("", 5, 6), add(key, 1, 2)]
    jobs = stub.SubmitJobs(pb.SubmitJobsRequest(jobs=batch), timeout=30).jobs
    ids = [j.job_id for j in jobs]
    assert ids[0] == ids[2] == ids[4], "each repeat of the key answers the first job"
    assert len(set(ids)) == 3, ids
    listed = stub.ListJobs(pb.ListJobsRequest(page_size=1000), timeout=10).jobs
    assert sum(1 for j in listed if j.job_id in set(ids)) == 3, "three jobs were made, no more"
    waited = stub.WaitJob(pb.WaitJobRequest(job_id=ids[0]), timeout=30)
    assert waited.job.state == pb.JOB_STATE_SUCCEEDED and waited.result.json.number_value == 3
    # A later batch with the key answers the same job too.
    again = stub.SubmitJobs(pb.SubmitJobsRequest(jobs=[add(key, 1, 2), add(key, 1, 2)]), timeout=30)
    assert [j.job_id for j in again.jobs] == [ids[0], ids[0]]
