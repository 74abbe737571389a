"""Results that cannot be encoded as asked are answered with a code and a message a
person can act on, never INTERNAL. Against the session's in-process server. (A result
that cannot be pickled at all fails its job: test_records_unpicklable.py.)"""

from __future__ import annotations

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
