"""Two service replicas on one Dask cluster, sharing job records in a real PostgreSQL server."""

from __future__ import annotations

import contextlib
import time

import cloudpickle
import grpc
import numpy as np
import pytest

from client_sdk import ComputeClient
from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk._proto.compute.v1 import compute_pb2_grpc as pb_grpc
from tests.helpers import running_server, shared_cluster, slowinc, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def pickled_spec(func, *args):
    payload = cloudpickle.dumps((func, args, {}))
    return pb.JobSpec(
        pickled_call=pb.PickledCall(payload=payload), scheduler=pb.SCHEDULER_DISTRIBUTED
    )


def state(stub, job):
    return stub.GetJob(pb.GetJobRequest(job_id=job.job_id), timeout=10).job.state


def sleep_job(seconds, scheduler=pb.SCHEDULER_DISTRIBUTED):
    spec = pb.JobSpec(call=pb.FunctionCall(function="sleep"), scheduler=scheduler)
    spec.call.args.append(seconds)
    return spec


def test_a_job_submitted_through_one_replica_is_served_by_the_other(tmp_path):
    with contextlib.ExitStack() as stack:
        port, database = shared_cluster(stack, tmp_path)
        args = ["--scheduler-address", f"tcp://127.0.0.1:{port}", "--local-processes", "1"]
        env = {"DASK_COMPUTE_JOB_STORE": database}
        a = stack.enter_context(running_server(args, tmp_path / "a.log", env=env))
        b = stack.enter_context(running_server(args, tmp_path / "b.log", env=env))
        stub_a = pb_grpc.ComputeServiceStub(stack.enter_context(grpc.insecure_channel(a.target)))
        stub_b = pb_grpc.ComputeServiceStub(stack.enter_context(grpc.insecure_channel(b.target)))
        wait_until(
            lambda: (
                stub_b.GetClusterInfo(pb.GetClusterInfoRequest(), timeout=10).cluster.n_workers == 2
            ),
            timeout=60,
            message="B to see the two workers",
        )

        # Read and wait through B for a job submitted through A.
        spec = pb.JobSpec(
            pickled_call=pb.PickledCall(
                payload=cloudpickle.dumps((slowinc, (41,), {"delay": 1.0}))
            ),
            scheduler=pb.SCHEDULER_DISTRIBUTED,
        )
        job = stub_a.SubmitJob(pb.SubmitJobRequest(job=spec), timeout=30).job
        seen = stub_b.GetJob(pb.GetJobRequest(job_id=job.job_id), timeout=10).job
        assert seen.job_id == job.job_id and seen.state in (
            pb.JOB_STATE_QUEUED,
            pb.JOB_STATE_RUNNING,
        )
        listed = stub_b.ListJobs(pb.ListJobsRequest(page_size=10), timeout=10).jobs
        assert job.job_id in {j.job_id for j in listed}
        waited = stub_b.WaitJob(pb.WaitJobRequest(job_id=job.job_id), timeout=60)
        assert waited.job.state == pb.JOB_STATE_SUCCEEDED and not waited.timed_out
        import pickle

        assert pickle.loads(waited.result.pickle) == 42, (
            "a small result is shared through the store"
        )

        # A wait through B that times out says so.
        slow = stub_a.SubmitJob(pb.SubmitJobRequest(job=sleep_job(5)), timeout=30).job
        request = pb.WaitJobRequest(job_id=slow.job_id)
        request.timeout.FromMilliseconds(300)
        partial = stub_b.WaitJob(request, timeout=30)
        assert partial.timed_out and partial.job.state == pb.JOB_STATE_RUNNING

        # Cancel through B a cluster job that A runs: the task leaves the cluster.
        cancelled = stub_b.CancelJob(
            pb.CancelJobRequest(job_id=slow.job_id, reason="via B"), timeout=30
        )
        assert cancelled.cancelled and cancelled.job.state == pb.JOB_STATE_CANCELLED
        seen_by_a = stub_a.WaitJob(pb.WaitJobRequest(job_id=slow.job_id), timeout=30).job
        assert seen_by_a.state == pb.JOB_STATE_CANCELLED and seen_by_a.cancel_reason == "via B"
        wait_until(
            lambda: all(
                w.tasks_in_flight == 0
                for w in stub_a.GetClusterInfo(
                    pb.GetClusterInfoRequest(), timeout=10
                ).cluster.workers
            ),
            timeout=30,
            message="the cancelled task to leave the workers",
        )

        # Cancel through B a job that runs on A's local threads scheduler.
        local = stub_a.SubmitJob(
            pb.SubmitJobRequest(job=sleep_job(5, pb.SCHEDULER_THREADS)), timeout=30
        ).job
        wait_until(lambda: state(stub_a, local) == pb.JOB_STATE_RUNNING, message="A to run it")
        assert stub_b.CancelJob(pb.CancelJobRequest(job_id=local.job_id), timeout=30).cancelled
        started = time.monotonic()
        on_a = stub_a.WaitJob(pb.WaitJobRequest(job_id=local.job_id), timeout=30).job
        assert on_a.state == pb.JOB_STATE_CANCELLED
        assert time.monotonic() - started < 4, "A notices the cancel at its next look at the store"

        # Idempotency keys hold across replicas.
        keyed = pb.JobSpec(call=pb.FunctionCall(function="ping"), request_id="shared-key")
        first = stub_a.Run(pb.RunRequest(job=keyed), timeout=30).job
        second = stub_b.Run(pb.RunRequest(job=keyed), timeout=30).job
        assert first.job_id == second.job_id
        batch = [
            pb.JobSpec(call=pb.FunctionCall(function="ping"), request_id=f"batch-{i}")
            for i in range(3)
        ]
        through_a = stub_a.SubmitJobs(pb.SubmitJobsRequest(jobs=batch), timeout=30).jobs
        through_b = stub_b.SubmitJobs(pb.SubmitJobsRequest(jobs=batch), timeout=30).jobs
        assert [j.job_id for j in through_b] == [j.job_id for j in through_a]

        # A result too large to keep with the record is published on the
        # cluster: B streams it, and releasing it through B frees it for A too.
        big = stub_a.SubmitJob(
            pb.SubmitJobRequest(job=pickled_spec(np.arange, 600_000)), timeout=30
        ).job
        assert stub_a.WaitJob(pb.WaitJobRequest(job_id=big.job_id), timeout=60).result.streamed
        with ComputeClient(b.target) as client:
            value = client.job(big.job_id).result(60)
            assert value.shape == (600_000,) and int(value[-1]) == 599_999
            assert client.release(big.job_id)
        with pytest.raises(grpc.RpcError) as gone:
            list(stub_a.GetJobResult(pb.GetJobResultRequest(job_id=big.job_id), timeout=30))
        assert gone.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_killed_replica_s_jobs_are_taken_over_by_another(tmp_path):
    import pickle
    import signal

    with contextlib.ExitStack() as stack:
        port, database = shared_cluster(stack, tmp_path, workers=1)
        args = [
            "--scheduler-address", f"tcp://127.0.0.1:{port}", "--local-processes", "1",
            "--replica-lease", "3",
        ]  # fmt: skip
        env = {"DASK_COMPUTE_JOB_STORE": database}
        a = stack.enter_context(running_server(args, tmp_path / "a.log", env=env))
        b = stack.enter_context(running_server(args, tmp_path / "b.log", env=env))
        stub_a = pb_grpc.ComputeServiceStub(stack.enter_context(grpc.insecure_channel(a.target)))
        stub_b = pb_grpc.ComputeServiceStub(stack.enter_context(grpc.insecure_channel(b.target)))
        retryable = pb.JobSpec(
            pickled_call=pb.PickledCall(
                payload=cloudpickle.dumps((slowinc, (41,), {"delay": 2.0}))
            ),
            scheduler=pb.SCHEDULER_THREADS,
            retryable=True,
        )
        again = stub_a.SubmitJob(pb.SubmitJobRequest(job=retryable), timeout=30).job
        lost = stub_a.SubmitJob(
            pb.SubmitJobRequest(job=sleep_job(600, pb.SCHEDULER_THREADS)), timeout=30
        ).job
        big = stub_a.SubmitJob(
            pb.SubmitJobRequest(job=pickled_spec(np.arange, 600_000)), timeout=30
        ).job
        assert stub_a.WaitJob(pb.WaitJobRequest(job_id=big.job_id), timeout=60).result.streamed
        # B takes over what the store says A was running.
        wait_until(
            lambda: all(state(stub_b, job) == pb.JOB_STATE_RUNNING for job in (again, lost)),
            message="the store to hold both jobs as running",
        )
        a.process.send_signal(signal.SIGKILL)
        a.process.wait(30)

        # B answers for both at once, and settles them once A's lease runs out.
        started = time.monotonic()
        waited = stub_b.WaitJob(pb.WaitJobRequest(job_id=lost.job_id), timeout=60)
        assert waited.job.state == pb.JOB_STATE_FAILED
        assert waited.job.error.type == "ReplicaLost"
        assert "its replica stopped answering for 3s" in waited.job.error.message
        assert time.monotonic() - started < 20
        rerun = stub_b.WaitJob(pb.WaitJobRequest(job_id=again.job_id), timeout=60)
        assert rerun.job.state == pb.JOB_STATE_SUCCEEDED
        assert pickle.loads(rerun.result.pickle) == 42, "the retryable job ran again, on B"
        assert "took over 2 unfinished jobs" in b.log()
        # A's large result outlives A: it is published on the cluster.
        with ComputeClient(b.target) as client:
            assert int(client.job(big.job_id).result(60)[-1]) == 599_999
        # B still serves new work.
        done = stub_b.Run(
            pb.RunRequest(job=pb.JobSpec(call=pb.FunctionCall(function="ping"))), timeout=30
        )
        assert done.job.state == pb.JOB_STATE_SUCCEEDED
