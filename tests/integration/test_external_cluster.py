"""The service on an existing Dask cluster: real `dask scheduler` and `dask worker` processes."""

from __future__ import annotations

import contextlib

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk._proto.compute.v1 import compute_pb2_grpc as pb_grpc
from tests.helpers import free_port, running_server, start_scheduler, start_worker, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


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

        info = wait_until(
            lambda: (c := cluster(stub)) and c.n_workers == 2 and c,
            timeout=60,
            message="two workers",
        )
        assert info.scheduler_address == f"tcp://127.0.0.1:{port}"
        assert info.total_threads == 2 and info.worker_type == pb.WORKER_TYPE_PROCESSES
        assert {w.name for w in info.workers} == {"w0", "w1"}
        assert all(w.memory_limit_bytes == 2**30 for w in info.workers)
        assert stub.Run(named("add", 1, 2), timeout=30).result.json.number_value == 3

        # A worker killed mid-job: Dask reschedules the task on the other one.
        running = stub.Run.future(named("sleep", 3), timeout=120)
        wait_until(
            lambda: any(w.tasks_in_flight for w in cluster(stub).workers),
            timeout=60,
            message="the sleep task",
        )
        busy = next(w.name for w in cluster(stub).workers if w.tasks_in_flight)
        workers[int(busy[1:])].kill()
        finished = running.result()
        assert finished.job.state == pb.JOB_STATE_SUCCEEDED, finished.job.error
        wait_until(
            lambda: cluster(stub).n_workers == 1, timeout=60, message="the dead worker to leave"
        )

        # The scheduler goes away: health turns NOT_SERVING, cluster calls are UNAVAILABLE.
        scheduler.terminate()
        scheduler.wait(30)
        wait_until(
            lambda: health(channel) == health_pb2.HealthCheckResponse.NOT_SERVING,
            timeout=60,
            message="NOT_SERVING",
        )
        assert health(channel, "") == health_pb2.HealthCheckResponse.SERVING, (
            "liveness is the process"
        )
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
        wait_until(
            lambda: health(channel) == health_pb2.HealthCheckResponse.SERVING,
            timeout=90,
            message="SERVING again",
        )
        back = stub.Run(named("add", 2, 2), timeout=60)
        assert back.job.state == pb.JOB_STATE_SUCCEEDED and back.result.json.number_value == 4
        assert (
            "lost the Dask scheduler" in srv.log()
            and "reconnected to the Dask scheduler" in srv.log()
        )
