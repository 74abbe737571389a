"""The Prometheus endpoint: its counters move as jobs run."""

from __future__ import annotations

import asyncio
import re
import urllib.request

import grpc
import pytest
import pytest_asyncio
from prometheus_client import generate_latest

from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk._proto.compute.v1 import compute_pb2_grpc as pb_grpc
from server.app import build_registry, build_server
from server.config import Settings
from server.core import ComputeCore
from tests.helpers import error_info, free_port, running_server

pytestmark = pytest.mark.integration


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        return response.read().decode()


def sample(text, name, **labels):
    selector = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = (
        rf"^{re.escape(name)}{{{re.escape(selector)}}} ([0-9.e+-]+)$"
        if labels
        else rf"^{re.escape(name)} ([0-9.e+-]+)$"
    )
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_metrics_endpoint_counts_jobs_rpcs_and_the_cluster(tmp_path):
    port = free_port()
    args = [
        "--n-workers",
        "1",
        "--threads-per-worker",
        "2",
        "--dashboard-address",
        "",
        "--local-processes",
        "1",
        "--metrics-port",
        str(port),
    ]
    with running_server(args, tmp_path / "server.log") as srv:
        before = scrape(port)
        assert sample(before, "dask_compute_cluster_workers") == 1
        assert sample(before, "dask_compute_cluster_threads") == 2
        with grpc.insecure_channel(srv.target) as channel:
            stub = pb_grpc.ComputeServiceStub(channel)
            for _ in range(3):
                stub.Run(
                    pb.RunRequest(
                        job=pb.JobSpec(
                            call=pb.FunctionCall(function="ping"), scheduler=pb.SCHEDULER_THREADS
                        )
                    ),
                    timeout=30,
                )
            spec = pb.JobSpec(call=pb.FunctionCall(function="fib"))
            spec.call.args.append(50)  # out of range: the job fails
            stub.Run(pb.RunRequest(job=spec), timeout=30)
            with pytest.raises(grpc.RpcError):
                stub.GetJob(pb.GetJobRequest(job_id="f" * 32), timeout=10)
        after = scrape(port)
    assert (
        sample(after, "dask_compute_jobs_submitted_total", kind="function", scheduler="threads")
        == 3
    )
    assert (
        sample(after, "dask_compute_jobs_finished_total", scheduler="threads", state="succeeded")
        == 3
    )
    assert (
        sample(after, "dask_compute_jobs_finished_total", scheduler="distributed", state="failed")
        == 1
    )
    assert sample(after, "dask_compute_rpcs_total", code="OK", method="Run") == 4
    assert sample(after, "dask_compute_rpcs_total", code="NOT_FOUND", method="GetJob") == 1
    assert sample(after, "dask_compute_job_duration_seconds_count", scheduler="threads") == 3
    assert sample(after, "dask_compute_received_bytes_total", method="Run") > 0
    assert sample(after, "dask_compute_sent_bytes_total", method="Run") > 0
    assert "dask_compute_jobs_pending 0.0" in after
    log = srv.log()
    assert "job=" in log and "event=finished state=succeeded scheduler=threads" in log
    started = "event=started kind=function target=ping scheduler=threads owner=anonymous"
    assert log.count(started) == 3, "one line as each job is accepted and starts"


TOKEN = "alice-token-0123456789"
GOOD = (("authorization", f"Bearer {TOKEN}"),)
WRONG = (("authorization", "Bearer not-the-token-0123456"),)


@pytest_asyncio.fixture
async def in_process():
    """A real core and server in this process, a token configured; yields ``(channel, core)``."""
    settings = Settings(
        n_workers=1,
        threads_per_worker=1,
        processes=False,
        dashboard_address="",
        local_processes=1,
        job_store="memory",
        port=0,
        tokens=f"alice run {TOKEN}",
    )
    core = ComputeCore(settings, build_registry(settings))
    await core.start()
    server, port, _ = build_server(settings, core)
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    await asyncio.wait_for(channel.channel_ready(), 10)
    yield channel, core
    await channel.close()
    await server.stop(None)
    await core.close()


async def _failure(call):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


def _rpcs(core, method, code):
    return sample(
        generate_latest(core.metrics.registry).decode(),
        "dask_compute_rpcs_total",
        code=code,
        method=method,
    )


@pytest.mark.asyncio
async def test_calls_refused_by_the_interceptor_are_counted_with_their_code(in_process):
    channel, core = in_process
    stub = pb_grpc.ComputeServiceStub(channel)
    refused = await _failure(
        stub.GetJob(pb.GetJobRequest(job_id="f" * 32), metadata=WRONG, timeout=10)
    )
    assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_info(refused).reason == "INVALID_TOKEN"
    stream = stub.WatchJob(pb.WatchJobRequest(job_id="f" * 32), timeout=10)  # no token at all
    assert (await _failure(stream.read())).code() == grpc.StatusCode.UNAUTHENTICATED
    # Bytes that are no GetJobRequest: field 1 announces 5 bytes, none follow.
    raw = channel.unary_unary("/compute.v1.ComputeService/GetJob")
    unparsable = await _failure(raw(b"\x0a\x05", metadata=GOOD, timeout=10))
    assert unparsable.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _rpcs(core, "GetJob", "UNAUTHENTICATED") == 1
    assert _rpcs(core, "WatchJob", "UNAUTHENTICATED") == 1
    assert _rpcs(core, "GetJob", "INVALID_ARGUMENT") == 1
    text = generate_latest(core.metrics.registry).decode()
    assert sample(text, "dask_compute_rpc_duration_seconds_count", method="GetJob") == 2
    assert sample(text, "dask_compute_received_bytes_total", method="GetJob") == 2 + 34


@pytest.mark.asyncio
async def test_an_error_answer_is_counted_with_the_code_it_was_answered_with(in_process):
    channel, core = in_process
    stub = pb_grpc.ComputeServiceStub(channel)
    missing = await _failure(
        stub.GetJob(pb.GetJobRequest(job_id="f" * 32), metadata=GOOD, timeout=10)
    )
    assert missing.code() == grpc.StatusCode.NOT_FOUND
    assert error_info(missing).reason == "JOB_NOT_FOUND"
    assert _rpcs(core, "GetJob", "NOT_FOUND") == 1
    assert _rpcs(core, "GetJob", "ABORTED") == 0
