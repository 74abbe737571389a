"""The Prometheus endpoint: its counters move as jobs run."""

from __future__ import annotations

import re
import urllib.request

import grpc
import pytest

from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk._proto.compute.v1 import compute_pb2_grpc as pb_grpc
from tests.helpers import free_port, running_server

pytestmark = pytest.mark.integration


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        return response.read().decode()


def sample(text, name, **labels):
    selector = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = rf"^{re.escape(name)}{{{re.escape(selector)}}} ([0-9.e+-]+)$" if labels else rf"^{re.escape(name)} ([0-9.e+-]+)$"
    match = re.search(pattern, text, re.M)
    return float(match.group(1)) if match else 0.0


def test_metrics_endpoint_counts_jobs_rpcs_and_the_cluster(tmp_path):
    port = free_port()
    args = ["--n-workers", "1", "--threads-per-worker", "2", "--dashboard-address", "", "--local-processes", "1", "--metrics-port", str(port)]
    with running_server(args, tmp_path / "server.log") as srv:
        before = scrape(port)
        assert sample(before, "dask_compute_cluster_workers") == 1
        assert sample(before, "dask_compute_cluster_threads") == 2
        with grpc.insecure_channel(srv.target) as channel:
            stub = pb_grpc.ComputeServiceStub(channel)
            for _ in range(3):
                stub.Run(pb.RunRequest(job=pb.JobSpec(call=pb.FunctionCall(function="ping"), scheduler=pb.SCHEDULER_THREADS)), timeout=30)
            spec = pb.JobSpec(call=pb.FunctionCall(function="fib"))
            spec.call.args.append(50)  # out of range: the job fails
            stub.Run(pb.RunRequest(job=spec), timeout=30)
            with pytest.raises(grpc.RpcError):
                stub.GetJob(pb.GetJobRequest(job_id="f" * 32), timeout=10)
        after = scrape(port)
    assert sample(after, "dask_compute_jobs_submitted_total", kind="function", scheduler="threads") == 3
    assert sample(after, "dask_compute_jobs_finished_total", scheduler="threads", state="succeeded") == 3
    assert sample(after, "dask_compute_jobs_finished_total", scheduler="distributed", state="failed") == 1
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
