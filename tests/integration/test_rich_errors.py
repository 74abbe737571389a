"""The standard error details through real clients against a real server.

- the SDK raises with ``.reason``, ``.metadata``, ``.retry_delay`` and
  ``.field_violations``, read from the google.rpc.Status trailer;
- the real ``grpcurl -format-error`` prints the ``ErrorInfo`` reason;
- the Node.js client (grpc-js + protobufjs) decodes a ``RetryInfo`` from a
  ``RESOURCE_EXHAUSTED`` (a caller past its job limit);
- the SDK's retry (gRPC's retry policy) waits the delay the server asks for.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys
import threading
import time
from concurrent import futures

import grpc
import pytest

from client_sdk import (
    AsyncComputeClient,
    ComputeClient,
    FunctionNotFound,
    InvalidArguments,
    ResourceExhausted,
)
from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk._proto.compute.v1 import compute_pb2_grpc as pb_grpc
from server import errors, status
from tests.helpers import ROOT, local_settings, serving_in_process, slowinc

pytestmark = pytest.mark.integration

NODE_CLIENT = ROOT / "tests" / "node" / "rich_errors_client.js"
BIN = pathlib.Path(sys.executable).parent


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory):
    """An in-process server where a caller may have one unfinished job."""
    settings = local_settings(
        tmp_path_factory.mktemp("limited"),
        n_workers=1,
        threads_per_worker=1,
        processes=False,
        local_processes=1,
        dashboard_address="",
        max_jobs_per_caller=1,
    )
    with serving_in_process(settings) as server:
        yield server


def test_the_sdk_raises_function_not_found_with_its_reason_and_metadata(local_client):
    with pytest.raises(FunctionNotFound) as info:
        local_client.run("nope")
    err = info.value
    assert err.reason == "FUNCTION_NOT_FOUND"
    assert err.metadata == {"function": "nope"}
    assert err.retry_delay is None


@pytest.mark.asyncio
async def test_the_async_sdk_reads_the_same_details(local_server):
    async with AsyncComputeClient(local_server.target, timeout=60) as client:
        with pytest.raises(FunctionNotFound) as info:
            await client.run("nope")
    assert (info.value.reason, info.value.metadata) == ("FUNCTION_NOT_FOUND", {"function": "nope"})


def test_the_sdk_raises_invalid_arguments_naming_the_parameter(local_client):
    with pytest.raises(InvalidArguments) as info:
        local_client.run("fib", 20.5)
    err = info.value
    assert err.reason == "INVALID_ARGUMENTS"
    assert err.metadata["function"] == "fib" and "fib(n: integer)" in err.metadata["signature"]
    ((field, description),) = err.field_violations
    assert field == "n" and "must be integer" in description


def test_the_sdk_raises_a_caller_past_its_job_limit_with_a_retry_delay(limited):
    with ComputeClient(limited.target, timeout=60) as client:
        held = client.submit(slowinc, 1, delay=3)
        with pytest.raises(ResourceExhausted) as info:
            client.submit(slowinc, 2)
        err = info.value
        assert err.reason == "CALLER_JOB_LIMIT"
        assert err.metadata["limit_name"] == "max_jobs_per_caller"
        assert err.metadata["limit"] == "1" and err.metadata["caller"] == "anonymous"
        assert err.retry_delay == errors.RETRY_DELAY
        assert held.result(timeout=60) == 2


def test_grpcurl_prints_the_error_info_reason(local_server):
    grpcurl = shutil.which("grpcurl", path=str(BIN)) or shutil.which("grpcurl")
    assert grpcurl, "grpcurl is missing: .ci/install-tools.sh installs it"
    result = subprocess.run(
        [
            grpcurl, "-plaintext", "-format-error",
            "-d", '{"job": {"call": {"function": "nope"}}}',
            local_server.target, "compute.v1.ComputeService/Run",
        ],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 64 + grpc.StatusCode.NOT_FOUND.value[0], result.stderr
    printed = json.loads(result.stdout + result.stderr)
    info, resource = (
        next(d for d in printed["details"] if d["@type"].endswith(name))
        for name in ("google.rpc.ErrorInfo", "google.rpc.ResourceInfo")
    )
    assert info["reason"] == "FUNCTION_NOT_FOUND" and info["domain"] == "compute.v1"
    assert info["metadata"] == {"function": "nope"}
    assert resource["resource_type"] == "function" and resource["resource_name"] == "nope"


def test_node_reads_a_retry_info_from_resource_exhausted(limited):
    node = shutil.which("node")
    assert node, "Node.js is missing: .ci/install-tools.sh installs it"
    assert (NODE_CLIENT.parent / "node_modules" / "protobufjs").exists(), "run .ci/install-tools.sh"
    with ComputeClient(limited.target, timeout=60) as client:
        result = subprocess.run(
            [node, str(NODE_CLIENT), limited.target],
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        out = json.loads(result.stdout)
        assert out["grpc_code"] == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
        details = out["status"]["details"]
        assert details["google.rpc.RetryInfo"]["retry_delay"] == {"seconds": 1, "nanos": 0}
        info = details["google.rpc.ErrorInfo"]
        assert info["reason"] == "CALLER_JOB_LIMIT" and info["domain"] == "compute.v1"
        assert info["metadata"]["limit_name"] == "max_jobs_per_caller"
        assert client.job(out["held"]).result(timeout=60) == 3


class _Starting(pb_grpc.ComputeServiceServicer):
    """Answers GetClusterInfo as a server whose cluster is starting, through server.status."""

    def __init__(self, answer_after: int) -> None:
        self.calls: list[float] = []
        self.answer_after = answer_after
        self.lock = threading.Lock()

    def GetClusterInfo(self, request, context):
        with self.lock:
            self.calls.append(time.monotonic())
            if len(self.calls) > self.answer_after:
                return pb.GetClusterInfoResponse(cluster=pb.ClusterInfo(n_workers=1))
        answer = status.status_of(
            errors.Unavailable("starting", reason="CLUSTER_STARTING", retry_delay=0.6), "Info"
        )
        context.set_trailing_metadata(answer.metadata)
        context.abort(answer.code, answer.message)


@pytest.fixture
def starting():
    servicer = _Starting(answer_after=2)
    server = grpc.server(futures.ThreadPoolExecutor(2))
    pb_grpc.add_ComputeServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(None)


def test_the_sdks_retry_waits_the_delay_the_server_asks_for(starting):
    servicer, target = starting
    with ComputeClient(target, timeout=30) as client:
        started = time.monotonic()
        assert client.info().n_workers == 1
    gaps = [b - a for a, b in zip(servicer.calls, servicer.calls[1:])]
    assert len(servicer.calls) == 3, "two refusals retried by gRPC, then the answer"
    assert all(gap >= 0.55 for gap in gaps), gaps  # gRPC's own backoff starts at 0.1 s
    assert time.monotonic() - started >= 1.1
