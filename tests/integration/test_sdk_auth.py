"""``token=`` and ``tls=`` as the client sends them, checked by a stand-in gRPC server.

The service has no authentication yet (a later issue), so these tests run a
small real gRPC server with a recording interceptor in its place: it sees the
metadata and the TLS handshake the client really produces, and answers
``UNAUTHENTICATED`` when the token is wrong, which the client must raise as
``PermissionDenied``.
"""

from __future__ import annotations

import concurrent.futures
import pickle
import subprocess
from collections.abc import Iterator

import grpc
import pytest

from client_sdk import AsyncComputeClient, ComputeClient, PermissionDenied, ServiceUnavailable
from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk._proto.compute.v1 import compute_pb2_grpc as pb_grpc
from client_sdk.errors import StatusCode

pytestmark = pytest.mark.integration

TOKEN = "s3cr3t-token"


class StandIn(pb_grpc.ComputeServiceServicer):
    """Answers GetClusterInfo and Run("ping") as the service would."""

    def GetClusterInfo(self, request, context):
        return pb.GetClusterInfoResponse(
            cluster=pb.ClusterInfo(n_workers=1, total_threads=1, total_memory_bytes=2**30),
            versions=pb.Versions(python="3.11.7", dask="x", distributed="x", cloudpickle="3.1.3"),
        )

    def Run(self, request, context):
        return pb.RunResponse(
            job=pb.Job(job_id="j1", state=pb.JOB_STATE_SUCCEEDED),
            result=pb.Result(pickle=pickle.dumps("pong"), format=pb.RESULT_FORMAT_PICKLE),
        )


class Recorder(grpc.ServerInterceptor):
    """Records each call's metadata; refuses calls without the right bearer token."""

    def __init__(self, required: str | None) -> None:
        self.required = required
        self.seen: list[dict[str, str]] = []

    def intercept_service(self, continuation, handler_call_details):
        metadata = dict(handler_call_details.invocation_metadata)
        self.seen.append(metadata)
        if self.required and metadata.get("authorization") != f"Bearer {self.required}":

            def refuse(request, context):
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "a valid bearer token is required")

            return grpc.unary_unary_rpc_method_handler(refuse)
        return continuation(handler_call_details)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[bytes, bytes, str]:
    """A self-signed certificate for 127.0.0.1: (key PEM, certificate PEM, certificate path)."""
    directory = tmp_path_factory.mktemp("tls")
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )
    return key.read_bytes(), cert.read_bytes(), str(cert)


def _serve(recorder: Recorder, credentials=None) -> tuple[grpc.Server, int]:
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(4), interceptors=[recorder])
    pb_grpc.add_ComputeServiceServicer_to_server(StandIn(), server)
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    return server, port


@pytest.fixture
def plain_server() -> Iterator[tuple[Recorder, int]]:
    recorder = Recorder(required=TOKEN)
    server, port = _serve(recorder)
    yield recorder, port
    server.stop(None)


@pytest.fixture
def tls_server(certificate) -> Iterator[tuple[Recorder, int]]:
    key, cert, _ = certificate
    recorder = Recorder(required=None)
    server, port = _serve(recorder, grpc.ssl_server_credentials([(key, cert)]))
    yield recorder, port
    server.stop(None)


def test_the_token_goes_with_every_call(plain_server) -> None:
    recorder, port = plain_server
    with ComputeClient(f"127.0.0.1:{port}", token=TOKEN, timeout=5) as client:
        assert client.info().n_workers == 1
        assert client.run("ping") == "pong"
    assert [m["authorization"] for m in recorder.seen] == [f"Bearer {TOKEN}"] * 2


@pytest.mark.parametrize("token", [None, "wrong"])
def test_a_refused_token_is_permission_denied(plain_server, token) -> None:
    recorder, port = plain_server
    with ComputeClient(f"127.0.0.1:{port}", token=token, timeout=5) as client:
        with pytest.raises(PermissionDenied, match="bearer token is required") as info:
            client.info()
    assert info.value.code is StatusCode.UNAUTHENTICATED
    assert ("authorization" in recorder.seen[0]) == (token is not None)


@pytest.mark.asyncio
async def test_the_async_client_sends_the_token_too(plain_server) -> None:
    recorder, port = plain_server
    async with AsyncComputeClient(f"127.0.0.1:{port}", token=TOKEN, timeout=5) as client:
        assert await client.run("ping") == "pong"
    async with AsyncComputeClient(f"127.0.0.1:{port}", timeout=5) as client:
        with pytest.raises(PermissionDenied):
            await client.run("ping")
    assert recorder.seen[0]["authorization"] == f"Bearer {TOKEN}"


@pytest.mark.parametrize("form", ["path", "bytes", "grpcs"])
def test_tls_against_a_given_root_certificate(tls_server, certificate, form) -> None:
    recorder, port = tls_server
    _, cert, cert_path = certificate
    target, tls = {
        "path": (f"127.0.0.1:{port}", cert_path),
        "bytes": (f"127.0.0.1:{port}", cert),
        "grpcs": (f"grpcs://127.0.0.1:{port}", cert_path),
    }[form]
    with ComputeClient(target, tls=tls, token=TOKEN, timeout=5) as client:
        assert client.address == f"grpcs://127.0.0.1:{port}"
        assert client.run("ping") == "pong"
    assert recorder.seen[-1]["authorization"] == f"Bearer {TOKEN}"


@pytest.mark.asyncio
async def test_tls_on_the_async_client(tls_server, certificate) -> None:
    _, port = tls_server
    async with AsyncComputeClient(f"127.0.0.1:{port}", tls=certificate[2], timeout=5) as client:
        assert (await client.info()).total_threads == 1


@pytest.mark.parametrize("tls", [False, True])
def test_a_failed_handshake_is_unavailability(tls_server, tls) -> None:
    # Plaintext against TLS, or TLS that does not trust the self-signed root.
    _, port = tls_server
    with ComputeClient(f"127.0.0.1:{port}", tls=tls, timeout=3) as client:
        with pytest.raises(ServiceUnavailable):
            client.info()
