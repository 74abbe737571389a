"""kill -9 the server and start it again on the same job store: every accepted job is accounted for."""

from __future__ import annotations

import pickle
import signal
import time

import cloudpickle
import grpc
import pytest

from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk._proto.compute.v1 import compute_pb2_grpc as pb_grpc
from tests.helpers import slowinc, start_server, wait_until

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


def _state(stub, job):
    return stub.GetJob(pb.GetJobRequest(job_id=job.job_id), timeout=10).job.state


def _submit(stub, spec):
    return stub.SubmitJob(pb.SubmitJobRequest(job=spec), timeout=30).job


def test_kill_9_and_restart_answers_for_every_job(tmp_path):
    env = {"DASK_COMPUTE_JOB_STORE": f"sqlite:///{tmp_path / 'jobs.db'}"}
    first = start_server(ARGS, tmp_path / "first.log", env=env)
    with grpc.insecure_channel(first.target) as channel:
        stub = pb_grpc.ComputeServiceStub(channel)
        done_spec = pb.JobSpec(
            call=pb.FunctionCall(function="add"),
            scheduler=pb.SCHEDULER_THREADS,
            request_id="done-key",
        )
        done_spec.call.args.extend([20, 22])
        done = stub.Run(pb.RunRequest(job=done_spec), timeout=30).job
        # A cluster job whose result its caller already read: the copy kept
        # with the record is the one that caller fetched (not fetched twice).
        read_spec = pb.JobSpec(
            pickled_call=pb.PickledCall(payload=cloudpickle.dumps((slowinc, (9,), {"delay": 0.0}))),
            scheduler=pb.SCHEDULER_DISTRIBUTED,
        )
        read = _submit(stub, read_spec)
        waited = stub.WaitJob(pb.WaitJobRequest(job_id=read.job_id), timeout=30)
        assert pickle.loads(waited.result.pickle) == 10
        sleeper = pb.JobSpec(
            call=pb.FunctionCall(function="sleep"), scheduler=pb.SCHEDULER_DISTRIBUTED
        )
        sleeper.call.args.append(600)
        lost = _submit(stub, sleeper)
        retry_spec = pb.JobSpec(
            pickled_call=pb.PickledCall(
                payload=cloudpickle.dumps((slowinc, (41,), {"delay": 1.0}))
            ),
            scheduler=pb.SCHEDULER_DISTRIBUTED,
            retryable=True,
            request_id="retry-me",
        )
        retried = _submit(stub, retry_spec)
        accepted = [done.job_id, lost.job_id, retried.job_id, read.job_id]
        instance_before = dict(
            stub.GetJob.with_call(pb.GetJobRequest(job_id=done.job_id), timeout=10)[
                1
            ].trailing_metadata()
        )["dask-compute-instance"]
        # Killed while both run: the cluster's sleep and the retryable job.
        wait_until(
            lambda: all(_state(stub, job) == pb.JOB_STATE_RUNNING for job in (lost, retried)),
            message="the unfinished jobs to run",
        )
        # A small result is kept with its record a moment after the job ends,
        # off the job's path (held_results.STORE_RESULT_DELAY): the record and
        # its end are stored before WaitJob answers, the result's copy just
        # after. This pause lets that copy land, so the restart can serve it.
        time.sleep(0.3)
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(30)

    second = start_server(ARGS, tmp_path / "second.log", env=env)
    try:
        with grpc.insecure_channel(second.target) as channel:
            stub = pb_grpc.ComputeServiceStub(channel)
            _response, call = stub.GetJob.with_call(
                pb.GetJobRequest(job_id=done.job_id), timeout=10
            )
            assert dict(call.trailing_metadata())["dask-compute-instance"] != instance_before
            listed = {
                j.job_id: j
                for j in stub.ListJobs(pb.ListJobsRequest(page_size=100), timeout=10).jobs
            }
            assert set(accepted) <= set(listed), (
                "every job accepted before the kill is still listed"
            )
            assert not any(
                j.state == pb.JOB_STATE_RUNNING and j.job_id == lost.job_id for j in listed.values()
            )

            old = stub.WaitJob(pb.WaitJobRequest(job_id=done.job_id), timeout=10)
            assert old.job.state == pb.JOB_STATE_SUCCEEDED
            assert old.result.json.number_value == 42, "a small result outlives the restart"
            kept = stub.WaitJob(pb.WaitJobRequest(job_id=read.job_id), timeout=10)
            assert pickle.loads(kept.result.pickle) == 10, "a cluster job's too"

            gone = stub.GetJob(pb.GetJobRequest(job_id=lost.job_id), timeout=10).job
            assert gone.state == pb.JOB_STATE_FAILED
            assert (
                gone.error.type == "ServiceRestarted" and gone.error.message == "service restarted"
            )

            rerun = stub.WaitJob(pb.WaitJobRequest(job_id=retried.job_id), timeout=60)
            assert rerun.job.state == pb.JOB_STATE_SUCCEEDED, rerun.job.error
            assert pickle.loads(rerun.result.pickle) == 42
            again = _submit(stub, retry_spec)
            assert again.job_id == retried.job_id, "the idempotency key still names the re-run job"
            done_again = stub.Run(
                pb.RunRequest(
                    job=pb.JobSpec(
                        call=done_spec.call,
                        scheduler=pb.SCHEDULER_THREADS,
                        request_id="added-before",
                    )
                ),
                timeout=30,
            ).job
            assert done_again.job_id != done.job_id
            same = stub.Run(pb.RunRequest(job=done_spec), timeout=30).job
            assert same.job_id == done.job_id, "idempotency keys from before the restart still hold"
        assert "3 jobs were unfinished" not in second.log()
        assert (
            "2 jobs were unfinished when the service last stopped: 1 re-run, 1 marked failed"
            in second.log()
        )
    finally:
        assert second.stop() == 0


def test_second_server_on_the_same_store_is_refused(tmp_path, local_server):
    env = {"DASK_COMPUTE_JOB_STORE": local_server.job_store}
    with pytest.raises(AssertionError, match="server exited with 1"):
        start_server(["--dashboard-address", ""], tmp_path / "log", env=env, timeout=60)
    assert "is in use by another server (pid" in (tmp_path / "log").read_text()
