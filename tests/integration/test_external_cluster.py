"""The service on an existing Dask cluster: real `dask scheduler` and `dask worker` processes."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk._proto.compute.v1 import compute_pb2_grpc as pb_grpc
from tests.helpers import BIN, ROOT, free_port, running_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@contextlib.contextmanager
def dask_process(args, log):
    # Workers import the tests' task functions by name, as they would an operator's module.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [str(BIN / "dask"), *args], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()


def start_scheduler(port, tmp_path):
    return dask_process(
        ["scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        tmp_path / "scheduler.log",
    )


def start_worker(port, tmp_path, name):
    return dask_process(
        ["worker", f"tcp://127.0.0.1:{port}", "--nthreads", "1", "--name", name, "--no-dashboard",
         "--memory-limit", "1GiB", "--local-directory", str(tmp_path / name)],
        tmp_path / f"{name}.log",
    )


def wait_for(predicate, timeout=60, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def cluster(stub):
    try:
        return stub.GetClusterInfo(pb.GetClusterInfoRequest(), timeout=10).cluster
    except grpc.RpcError:
        return None


def health(channel, service="compute.v1.ComputeService"):
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status


def named(function, *args, scheduler=pb.SCHEDULER_DISTRIBUTED):
    spec = pb.JobSpec(call=pb.FunctionCall(function=function), scheduler=scheduler)
    spec.call.args.extend(list(args))
    return pb.RunRequest(job=spec)


def test_existing_scheduler_outage_and_recovery(tmp_path):
    port = free_port()
    with contextlib.ExitStack() as stack:
        scheduler = stack.enter_context(start_scheduler(port, tmp_path))
        workers = [stack.enter_context(start_worker(port, tmp_path, f"w{i}")) for i in range(2)]
        args = ["--scheduler-address", f"tcp://127.0.0.1:{port}", "--local-processes", "1"]
        srv = stack.enter_context(running_server(args, tmp_path / "server.log"))
        channel = stack.enter_context(grpc.insecure_channel(srv.target))
        stub = pb_grpc.ComputeServiceStub(channel)

        info = wait_for(lambda: (c := cluster(stub)) and c.n_workers == 2 and c, what="two workers")
        assert info.scheduler_address == f"tcp://127.0.0.1:{port}"
        assert info.total_threads == 2 and info.worker_type == pb.WORKER_TYPE_PROCESSES
        assert {w.name for w in info.workers} == {"w0", "w1"}
        assert all(w.memory_limit_bytes == 2**30 for w in info.workers)
        assert stub.Run(named("add", 1, 2), timeout=30).result.json.number_value == 3

        # A worker killed mid-job: Dask reschedules the task on the other one.
        running = stub.Run.future(named("sleep", 3), timeout=120)
        wait_for(lambda: any(w.tasks_in_flight for w in cluster(stub).workers), what="the sleep task")
        busy = next(w.name for w in cluster(stub).workers if w.tasks_in_flight)
        workers[int(busy[1:])].kill()
        finished = running.result()
        assert finished.job.state == pb.JOB_STATE_SUCCEEDED, finished.job.error
        wait_for(lambda: cluster(stub).n_workers == 1, what="the dead worker to leave")

        # The scheduler goes away: health turns NOT_SERVING, cluster calls are UNAVAILABLE.
        scheduler.terminate()
        scheduler.wait(30)
        wait_for(lambda: health(channel) == health_pb2.HealthCheckResponse.NOT_SERVING, what="NOT_SERVING")
        assert health(channel, "") == health_pb2.HealthCheckResponse.SERVING, "liveness is the process"
        with pytest.raises(grpc.RpcError) as info_error:
            stub.Run(named("ping"), timeout=30)
        assert info_error.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "unreachable" in info_error.value.details()
        with pytest.raises(grpc.RpcError) as info_error:
            stub.GetClusterInfo(pb.GetClusterInfoRequest(), timeout=30)
        assert info_error.value.code() == grpc.StatusCode.UNAVAILABLE
        local = stub.Run(named("ping", scheduler=pb.SCHEDULER_THREADS), timeout=30)
        assert local.result.json.string_value == "pong", "local schedulers keep working"

        # The scheduler comes back on the same address: the service reconnects.
        stack.enter_context(start_scheduler(port, tmp_path))
        stack.enter_context(start_worker(port, tmp_path, "w2"))
        wait_for(lambda: health(channel) == health_pb2.HealthCheckResponse.SERVING, timeout=90, what="SERVING again")
        back = stub.Run(named("add", 2, 2), timeout=60)
        assert back.job.state == pb.JOB_STATE_SUCCEEDED and back.result.json.number_value == 4
        assert "lost the Dask scheduler" in srv.log() and "reconnected to the Dask scheduler" in srv.log()
