"""Health, reflection, cluster shapes, configuration and shutdown of real server processes."""

from __future__ import annotations

import os
import pathlib
import signal
import time

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk._proto.compute.v1 import compute_pb2_grpc as pb_grpc
from tests.helpers import running_server, start_server, wait_until

pytestmark = pytest.mark.integration


def _cluster(target: str) -> pb.ClusterInfo:
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.ComputeServiceStub(channel)
        return stub.GetClusterInfo(pb.GetClusterInfoRequest(), timeout=30).cluster


def test_health_is_serving(local_server):
    with grpc.insecure_channel(local_server.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "compute.v1.ComputeService"):
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert response.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as info:
            stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_and_describes_the_services(local_server):
    with grpc.insecure_channel(local_server.target) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        assert services == {
            "compute.v1.ComputeService",
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
        }
        pool = descriptor_pool.DescriptorPool(database)
        service = pool.FindServiceByName("compute.v1.ComputeService")
        assert {m.name for m in service.methods} >= {
            "GetClusterInfo",
            "ListFunctions",
            "Run",
            "SubmitJob",
            "SubmitJobs",
            "GetJob",
            "WaitJob",
            "CancelJob",
            "ListJobs",
        }
        job_state = pool.FindEnumTypeByName("compute.v1.JobState")
        assert job_state.values_by_name["JOB_STATE_SUCCEEDED"].number == 3


def test_threads_cluster_shape(tmp_path):
    args = [
        "--no-processes",
        "--n-workers",
        "2",
        "--threads-per-worker",
        "2",
        "--dashboard-address",
        "",
    ]
    with running_server(args, tmp_path / "server.log") as srv:
        cluster = _cluster(srv.target)
    assert (cluster.n_workers, cluster.total_threads) == (2, 4)
    assert cluster.worker_type == pb.WORKER_TYPE_THREADS
    assert cluster.dashboard_link == ""


def test_no_processes_alone_is_one_worker_with_every_core(tmp_path):
    env = {"DASK_COMPUTE_DASHBOARD_ADDRESS": "", "DASK_COMPUTE_LOCAL_PROCESSES": "1"}
    with running_server(["--no-processes"], tmp_path / "server.log", env=env) as srv:
        cluster = _cluster(srv.target)
    assert cluster.n_workers == 1
    assert cluster.total_threads == os.cpu_count()
    assert cluster.worker_type == pb.WORKER_TYPE_THREADS


def test_environment_configures_and_flags_win(tmp_path):
    env = {
        "DASK_COMPUTE_N_WORKERS": "1",
        "DASK_COMPUTE_THREADS_PER_WORKER": "3",
        "DASK_COMPUTE_PROCESSES": "false",
        "DASK_COMPUTE_DASHBOARD_ADDRESS": "",
        "DASK_COMPUTE_DEFAULT_SCHEDULER": "threads",
    }
    with running_server(["--threads-per-worker", "1"], tmp_path / "server.log", env=env) as srv:
        with grpc.insecure_channel(srv.target) as channel:
            stub = pb_grpc.ComputeServiceStub(channel)
            info = stub.GetClusterInfo(pb.GetClusterInfoRequest(), timeout=30)
            spec = pb.JobSpec(call=pb.FunctionCall(function="ping"))
            job = stub.Run(pb.RunRequest(job=spec), timeout=30).job
    assert (info.cluster.n_workers, info.cluster.total_threads) == (1, 1)
    assert info.default_scheduler == pb.SCHEDULER_THREADS
    assert job.scheduler == pb.SCHEDULER_THREADS


def test_bad_configuration_refuses_to_start(tmp_path):
    env = {"DASK_COMPUTE_PORT": "not-a-port"}
    log = tmp_path / "server.log"
    with pytest.raises(AssertionError, match="server exited with 2"):
        start_server([], log, env=env, port_flag=False, timeout=30)
    assert "DASK_COMPUTE_PORT='not-a-port'" in log.read_text()


def _children(pid: int) -> set[int]:
    out = set()
    for task in pathlib.Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        out.update(int(c) for c in children)
    return out


def _descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        for child in _children(todo.pop()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _cmdline(pid: int) -> str:
    try:
        return pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
    except OSError:
        return "?"


def test_sigterm_shuts_down_cleanly_and_cancels_running_jobs(tmp_path):
    args = [
        "--n-workers",
        "1",
        "--threads-per-worker",
        "1",
        "--dashboard-address",
        "",
        "--local-processes",
        "1",
        "--shutdown-grace",
        "2",
    ]
    srv = start_server(args, tmp_path / "server.log")
    with grpc.insecure_channel(srv.target) as channel:
        stub = pb_grpc.ComputeServiceStub(channel)
        spec = pb.JobSpec(
            call=pb.FunctionCall(function="sleep"), scheduler=pb.SCHEDULER_DISTRIBUTED
        )
        spec.call.args.append(600)
        job = stub.SubmitJob(pb.SubmitJobRequest(job=spec), timeout=30).job
        waiter = stub.WaitJob.future(pb.WaitJobRequest(job_id=job.job_id), timeout=60)
        wait_until(
            lambda: _state(stub, job.job_id) == pb.JOB_STATE_RUNNING, message="the job to run"
        )
        descendants = wait_until(
            lambda: len(found := _descendants(srv.process.pid)) >= 2 and found,
            message="a worker process and a pool process",
        )
        started = time.monotonic()
        code = srv.stop(signal.SIGTERM, timeout=60)
        elapsed = time.monotonic() - started
        answer = waiter.result(timeout=10)
    assert code == 0, srv.log()[-3000:]
    assert elapsed < 30, f"shutdown took {elapsed:.1f}s"
    assert answer.job.state == pb.JOB_STATE_CANCELLED
    assert answer.job.cancel_reason == "the server shut down"
    log = srv.log()
    assert "shutting down" in log and "Dask client and cluster closed" in log and "stopped" in log
    assert "Traceback" not in log, log[-3000:]

    def leftover():
        return {pid: _cmdline(pid) for pid in descendants if _alive(pid)}

    # Helpers such as multiprocessing's resource tracker exit on EOF, a little later.
    wait_until(
        lambda: not leftover(),
        timeout=10,
        interval=0.1,
        message=lambda: f"no process left behind: {leftover()}",
    )


def test_new_jobs_are_unavailable_while_draining(tmp_path):
    args = [
        "--n-workers",
        "1",
        "--threads-per-worker",
        "2",
        "--dashboard-address",
        "",
        "--local-processes",
        "1",
        "--shutdown-grace",
        "10",
    ]
    srv = start_server(args, tmp_path / "server.log")
    with grpc.insecure_channel(srv.target) as channel:
        stub = pb_grpc.ComputeServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        spec = pb.JobSpec(call=pb.FunctionCall(function="sleep"), scheduler=pb.SCHEDULER_THREADS)
        spec.call.args.append(3)
        running = stub.Run.future(pb.RunRequest(job=spec), timeout=60)
        wait_until(
            lambda: (
                stub.ListJobs(pb.ListJobsRequest(states=[pb.JOB_STATE_RUNNING]), timeout=10).jobs
            ),
            message="the Run's job to run",
        )
        srv.process.send_signal(signal.SIGTERM)
        wait_until(
            lambda: (
                health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
                == health_pb2.HealthCheckResponse.NOT_SERVING
            ),
            timeout=10,
            message="NOT_SERVING",
        )
        with pytest.raises(grpc.RpcError) as info:
            stub.Run(
                pb.RunRequest(job=pb.JobSpec(call=pb.FunctionCall(function="ping"))), timeout=10
            )
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "shutting down" in info.value.details()
        finished = running.result(timeout=30)
    assert finished.job.state == pb.JOB_STATE_SUCCEEDED, (
        "a running Run finishes within the grace period"
    )
    assert srv.process.wait(30) == 0


def _state(stub, job_id):
    return stub.GetJob(pb.GetJobRequest(job_id=job_id), timeout=10).job.state


def _exit_now():
    import sys

    sys.exit(3)


def test_sys_exit_in_an_in_process_worker_fails_the_job_not_the_server(tmp_path):
    import cloudpickle

    args = [
        "--no-processes",
        "--n-workers",
        "1",
        "--threads-per-worker",
        "1",
        "--dashboard-address",
        "",
        "--local-processes",
        "1",
    ]
    with running_server(args, tmp_path / "server.log") as srv:
        with grpc.insecure_channel(srv.target) as channel:
            stub = pb_grpc.ComputeServiceStub(channel)
            spec = pb.JobSpec(
                pickled_call=pb.PickledCall(payload=cloudpickle.dumps((_exit_now, (), {}))),
                scheduler=pb.SCHEDULER_DISTRIBUTED,
            )
            job = stub.Run(pb.RunRequest(job=spec), timeout=60).job
            assert job.state == pb.JOB_STATE_FAILED
            assert "SystemExit(3,)" in job.error.message
            after = stub.Run(
                pb.RunRequest(job=pb.JobSpec(call=pb.FunctionCall(function="ping"))), timeout=30
            )
            assert after.job.state == pb.JOB_STATE_SUCCEEDED
        assert srv.process.poll() is None, "the server is still up"
