"""A waiter is told of a job's end only once the end is stored: kill -9 right
after WaitJob or WaitJobs answers, and the job is found finished after the restart."""

from __future__ import annotations

import signal

import grpc
import pytest

from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk._proto.compute.v1 import compute_pb2_grpc as pb_grpc
from tests.helpers import ROOT, start_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ARGS = [
    "--n-workers", "1", "--threads-per-worker", "2", "--dashboard-address", "",
    "--local-processes", "1",
]  # fmt: skip

#: Imported before the server's code: the store's disk is slow (each commit takes
#: 0.3 s more), so an answer sent before its job's end is committed would be
#: followed by the kill before the commit.
SLOW_DISK = """
import time
import server.store.writer as w
_apply = w.apply_batch
def apply_batch(conn, batch):
    time.sleep(0.3)
    return _apply(conn, batch)
w.apply_batch = apply_batch
"""

SCHEDULERS = (pb.SCHEDULER_THREADS, pb.SCHEDULER_SYNCHRONOUS, pb.SCHEDULER_DISTRIBUTED)


def sleeper(scheduler) -> pb.JobSpec:
    """A job still running when its waiter starts waiting (so the waiter is woken)."""
    spec = pb.JobSpec(call=pb.FunctionCall(function="sleep"), scheduler=scheduler)
    spec.call.args.append(0.5)
    return spec


@pytest.mark.parametrize("call", ["WaitJob", "WaitJobs"])
def test_a_waiter_answered_just_before_sigkill_finds_the_job_finished_after_restart(tmp_path, call):
    env = {"DASK_COMPUTE_JOB_STORE": f"sqlite:///{tmp_path / 'jobs.db'}"}
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SLOW_DISK)
    slow = {**env, "PYTHONPATH": f"{hook}:{ROOT}"}
    first = start_server(ARGS, tmp_path / "first.log", env=slow)
    told = []
    try:
        with grpc.insecure_channel(first.target) as channel:
            stub = pb_grpc.ComputeServiceStub(channel)
            for scheduler in SCHEDULERS:
                job = stub.SubmitJob(pb.SubmitJobRequest(job=sleeper(scheduler)), timeout=30).job
                assert job.state in (pb.JOB_STATE_QUEUED, pb.JOB_STATE_RUNNING)
                if call == "WaitJob":
                    answer = stub.WaitJob(pb.WaitJobRequest(job_id=job.job_id), timeout=60).job
                else:
                    answers = stub.WaitJobs(pb.WaitJobsRequest(job_ids=[job.job_id]), timeout=60)
                    (answer,) = [entry.job for entry in answers.jobs]
                assert answer.state == pb.JOB_STATE_SUCCEEDED, answer
                told.append(job.job_id)
    finally:
        # At once: no time for a write that the answer did not wait for.
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(30)

    assert len(told) == len(SCHEDULERS)
    second = start_server(ARGS, tmp_path / "second.log", env=env)
    try:
        with grpc.insecure_channel(second.target) as channel:
            stub = pb_grpc.ComputeServiceStub(channel)
            for job_id in told:
                job = stub.GetJob(pb.GetJobRequest(job_id=job_id), timeout=10).job
                assert job.state == pb.JOB_STATE_SUCCEEDED, job
        assert "unfinished when the service last stopped" not in second.log()
    finally:
        assert second.stop() == 0
