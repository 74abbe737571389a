"""What a caller is told is already in the store: kill -9 right after an answer loses nothing."""

from __future__ import annotations

import signal

import grpc
import pytest

from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk._proto.compute.v1 import compute_pb2_grpc as pb_grpc
from tests.helpers import start_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ARGS = [
    "--n-workers", "1", "--threads-per-worker", "1", "--dashboard-address", "",
    "--local-processes", "1",
]  # fmt: skip


def test_a_run_answered_just_before_sigkill_is_found_succeeded_after_restart(tmp_path):
    env = {"DASK_COMPUTE_JOB_STORE": f"sqlite:///{tmp_path / 'jobs.db'}"}
    first = start_server(ARGS, tmp_path / "first.log", env=env)
    answered = []
    try:
        with grpc.insecure_channel(first.target) as channel:
            stub = pb_grpc.ComputeServiceStub(channel)
            for scheduler in (pb.SCHEDULER_THREADS, pb.SCHEDULER_SYNCHRONOUS):
                spec = pb.JobSpec(call=pb.FunctionCall(function="add"), scheduler=scheduler)
                spec.call.args.extend([20, 22])
                answer = stub.Run(pb.RunRequest(job=spec), timeout=30)
                assert answer.job.state == pb.JOB_STATE_SUCCEEDED
                answered.append(answer.job.job_id)
    finally:
        # At once: no time for a write that the answer did not wait for.
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(30)

    second = start_server(ARGS, tmp_path / "second.log", env=env)
    try:
        with grpc.insecure_channel(second.target) as channel:
            stub = pb_grpc.ComputeServiceStub(channel)
            for job_id in answered:
                job = stub.GetJob(pb.GetJobRequest(job_id=job_id), timeout=10).job
                assert job.state == pb.JOB_STATE_SUCCEEDED, job
    finally:
        second.stop()
