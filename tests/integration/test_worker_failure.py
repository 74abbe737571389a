"""Worker processes that die mid-job: Dask reschedules, a job that keeps killing workers fails cleanly."""

from __future__ import annotations

import os
import pathlib

import cloudpickle
import grpc
import pytest

from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk._proto.compute.v1 import compute_pb2_grpc as pb_grpc
from tests.helpers import running_server, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _kill_worker_once(marker):
    """Kill the worker process the first time; succeed when Dask retries elsewhere."""
    path = pathlib.Path(marker)
    if not path.exists():
        path.write_text("killed once")
        os._exit(1)
    return "survived"


def _always_kill():
    os._exit(1)


def _run(stub, func, *args):
    spec = pb.JobSpec(
        pickled_call=pb.PickledCall(payload=cloudpickle.dumps((func, args, {}))),
        scheduler=pb.SCHEDULER_DISTRIBUTED,
    )
    return stub.Run(pb.RunRequest(job=spec), timeout=180)


def test_dead_workers_are_survived_and_reported(tmp_path):
    args = [
        "--n-workers",
        "2",
        "--threads-per-worker",
        "1",
        "--dashboard-address",
        "",
        "--local-processes",
        "1",
    ]
    env = {"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "1"}
    with running_server(args, tmp_path / "server.log", env=env) as srv:
        with grpc.insecure_channel(srv.target) as channel:
            stub = pb_grpc.ComputeServiceStub(channel)
            rescheduled = _run(stub, _kill_worker_once, str(tmp_path / "marker"))
            assert rescheduled.job.state == pb.JOB_STATE_SUCCEEDED, rescheduled.job.error
            assert (tmp_path / "marker").exists(), "a worker really died"

            killer = _run(stub, _always_kill)
            assert killer.job.state == pb.JOB_STATE_FAILED
            assert killer.job.error.type == "distributed.scheduler.KilledWorker"
            assert "_always_kill" in killer.job.error.message

            after = stub.Run(
                pb.RunRequest(job=pb.JobSpec(call=pb.FunctionCall(function="ping"))), timeout=120
            )
            assert after.job.state == pb.JOB_STATE_SUCCEEDED, "the service keeps serving"

            def workers():
                return stub.GetClusterInfo(pb.GetClusterInfoRequest(), timeout=30).cluster.n_workers

            wait_until(
                lambda: workers() == 2,
                timeout=60,
                interval=0.2,
                message="the nannies to restart the dead workers",
            )
