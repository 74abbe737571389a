"""After kill -9 and a restart, a record says what is really there: a result the
server held only in its process (too large to store, or killed in the moment
before a small one is stored) is gone, the record says so, and GetJobResult
says why."""

from __future__ import annotations

import pickle
import signal

import cloudpickle
import grpc
import pytest

from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk._proto.compute.v1 import compute_pb2_grpc as pb_grpc
from tests.helpers import ROOT, start_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ARGS = [
    "--n-workers",
    "1",
    "--threads-per-worker",
    "2",
    "--dashboard-address",
    "",
    "--local-processes",
    "1",
]

#: Imported before the server's code: a small result is kept with its record only
#: an hour after its job ends, so the kill lands in that window every time.
NEVER_IN_TIME = "import server.held_results as h\nh.STORE_RESULT_DELAY = 3600.0\n"


def big(n):
    return b"x" * n


def pickled(func, *args, scheduler):
    payload = cloudpickle.dumps((func, args, {}))
    return pb.JobSpec(pickled_call=pb.PickledCall(payload=payload), scheduler=scheduler)


def finish(stub, spec):
    job = stub.SubmitJob(pb.SubmitJobRequest(job=spec), timeout=30).job
    done = stub.WaitJob(pb.WaitJobRequest(job_id=job.job_id), timeout=60).job
    assert done.state == pb.JOB_STATE_SUCCEEDED and done.result_available, done
    return job.job_id


def result_error(stub, job_id):
    with pytest.raises(grpc.RpcError) as info:
        list(stub.GetJobResult(pb.GetJobResultRequest(job_id=job_id), timeout=30))
    return info.value


def test_results_held_only_by_the_killed_process_are_said_gone(tmp_path):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(NEVER_IN_TIME)
    store = {"DASK_COMPUTE_JOB_STORE": f"sqlite:///{tmp_path / 'jobs.db'}"}
    first = start_server(
        ARGS, tmp_path / "first.log", env={**store, "PYTHONPATH": f"{hook}:{ROOT}"}
    )
    with grpc.insecure_channel(first.target) as channel:
        stub = pb_grpc.ComputeServiceStub(channel)
        # 3 MiB: more than --stored-result-bytes (1 MiB), held only on the cluster.
        large = finish(stub, pickled(big, 3 * 1024 * 1024, scheduler=pb.SCHEDULER_DISTRIBUTED))
        # Small, but its copy for the record is not made before the kill.
        small = finish(stub, pickled(big, 10, scheduler=pb.SCHEDULER_THREADS))
        assert (
            pickle.loads(stub.WaitJob(pb.WaitJobRequest(job_id=small), timeout=30).result.pickle)
            == b"x" * 10
        )
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(30)

    second = start_server(ARGS, tmp_path / "second.log", env=store)
    try:
        with grpc.insecure_channel(second.target) as channel:
            stub = pb_grpc.ComputeServiceStub(channel)
            for job_id in (large, small):
                job = stub.GetJob(pb.GetJobRequest(job_id=job_id), timeout=10).job
                assert job.state == pb.JOB_STATE_SUCCEEDED
                assert not job.result_available, "the record says the result is not there"
                listed = {
                    j.job_id: j
                    for j in stub.ListJobs(pb.ListJobsRequest(page_size=10), timeout=10).jobs
                }
                assert not listed[job_id].result_available
                error = result_error(stub, job_id)
                assert error.code() == grpc.StatusCode.NOT_FOUND
                assert "the service restarted since the job succeeded" in error.details()
                assert "--stored-result-bytes" in error.details()
                with pytest.raises(grpc.RpcError) as waited:  # as for a released result
                    stub.WaitJob(pb.WaitJobRequest(job_id=job_id), timeout=10)
                assert waited.value.code() == grpc.StatusCode.NOT_FOUND
                assert "the service restarted" in waited.value.details()
        assert (
            "2 results were held only by the server's process when it last stopped" in second.log()
        )
    finally:
        assert second.stop() == 0
    # A third start finds nothing more to mark, and still says why.
    third = start_server(ARGS, tmp_path / "third.log", env=store)
    try:
        with grpc.insecure_channel(third.target) as channel:
            stub = pb_grpc.ComputeServiceStub(channel)
            assert "the service restarted" in result_error(stub, large).details()
        assert "results were held only" not in third.log()
    finally:
        assert third.stop() == 0
