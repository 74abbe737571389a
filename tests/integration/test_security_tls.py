"""TLS and mutual TLS through real server processes, with a CA made at test time.

A plaintext client, a client that does not trust the server's CA, a client
without a certificate under mTLS and a client whose certificate another CA
signed are all refused in the handshake; a registered certificate's subject CN
names the caller (``cert:<CN>``), as a token's name would.
"""

from __future__ import annotations

import cloudpickle
import dask
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk._proto.compute.v1 import compute_pb2_grpc as pb_grpc
from tests.helpers import inc, running_server
from tests.tools.certs import CertificateAuthority

pytestmark = pytest.mark.integration

ALICE = "alice-token-0123456789abcdef"
SERVER_ARGS = [
    "--no-processes",
    "--n-workers",
    "1",
    "--threads-per-worker",
    "2",
    "--dashboard-address",
    "",
    "--local-processes",
    "1",
]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority(directory, "test-ca")
    stranger_ca = CertificateAuthority(directory, "stranger-ca")
    tokens = directory / "tokens"
    tokens.write_text(f"alice run,code {ALICE}\ncert:worker-7 run,code\n")
    tokens.chmod(0o600)
    return {
        "ca": ca,
        "server": ca.issue("localhost", server=True),
        "worker": ca.issue("worker-7"),
        "unregistered": ca.issue("unregistered"),
        "stranger": stranger_ca.issue("worker-7"),  # the right name, the wrong CA
        "stranger_ca": stranger_ca,
        "tokens": tokens,
        "dir": directory,
    }


@pytest.fixture(scope="module")
def tls_server(pki):
    args = [
        *SERVER_ARGS,
        "--tokens-file",
        str(pki["tokens"]),
        "--tls-cert",
        str(pki["server"].cert_path),
        "--tls-key",
        str(pki["server"].key_path),
    ]
    with running_server(args, pki["dir"] / "tls.log") as server:
        yield server


@pytest.fixture(scope="module")
def mtls_server(pki):
    args = [
        *SERVER_ARGS,
        "--tokens-file",
        str(pki["tokens"]),
        "--tls-cert",
        str(pki["server"].cert_path),
        "--tls-key",
        str(pki["server"].key_path),
        "--tls-client-ca",
        str(pki["ca"].cert_path),
    ]
    with running_server(args, pki["dir"] / "mtls.log") as server:
        yield server


def secure(target, root: bytes, client=None) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=root,
        private_key=None if client is None else client.key_pem,
        certificate_chain=None if client is None else client.cert_pem,
    )
    return grpc.secure_channel(target, credentials)


def ping(channel, token=None) -> pb.RunResponse:
    stub = pb_grpc.ComputeServiceStub(channel)
    metadata = None if token is None else (("authorization", f"Bearer {token}"),)
    return stub.Run(
        pb.RunRequest(job=pb.JobSpec(call=pb.FunctionCall(function="ping"))),
        metadata=metadata,
        timeout=15,
    )


def refused(channel, token=ALICE) -> grpc.StatusCode:
    with channel, pytest.raises(grpc.RpcError) as info:
        ping(channel, token)
    return info.value.code()


def test_policy_lines_say_tls_and_mtls(tls_server, mtls_server):
    assert (
        "policy: auth=tokens(1)+certs(1) tls=tls pickled-work=code-permission" in tls_server.log()
    )
    assert (
        "policy: auth=tokens(1)+certs(1) tls=mtls pickled-work=code-permission" in mtls_server.log()
    )


def test_tls_serves_a_client_that_trusts_the_ca(tls_server, pki):
    with secure(tls_server.target, pki["ca"].cert_pem) as channel:
        response = ping(channel, ALICE)
        assert response.job.state == pb.JOB_STATE_SUCCEEDED and response.job.owner == "alice"
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        code = None
        try:
            ping(channel)
        except grpc.RpcError as exc:
            code = exc.code()
        assert code == grpc.StatusCode.UNAUTHENTICATED, "TLS alone is no credential"


def test_the_sdk_connects_over_tls(tls_server, pki):
    from client_sdk import ComputeClient

    with ComputeClient(
        f"grpcs://{tls_server.target}", tls=str(pki["ca"].cert_path), token=ALICE, timeout=30
    ) as client:
        assert client.run("add", 2, 3) == 5
        assert client.compute(dask.delayed(inc)(1), scheduler="threads") == (2,)


@pytest.mark.parametrize("server_name", ["tls_server", "mtls_server"])
def test_plaintext_and_unknown_ca_clients_are_refused(request, pki, server_name):
    server = request.getfixturevalue(server_name)
    assert refused(grpc.insecure_channel(server.target)) == grpc.StatusCode.UNAVAILABLE
    assert (
        refused(secure(server.target, pki["stranger_ca"].cert_pem, pki["worker"]))
        == grpc.StatusCode.UNAVAILABLE
    )
    assert server.process.poll() is None


def test_mtls_refuses_a_client_without_a_certificate(mtls_server, pki):
    assert refused(secure(mtls_server.target, pki["ca"].cert_pem)) == grpc.StatusCode.UNAVAILABLE


def test_mtls_refuses_a_certificate_from_another_ca(mtls_server, pki):
    assert (
        refused(secure(mtls_server.target, pki["ca"].cert_pem, pki["stranger"]))
        == grpc.StatusCode.UNAVAILABLE
    )


def test_a_registered_certificate_stands_in_for_a_token(mtls_server, pki):
    with secure(mtls_server.target, pki["ca"].cert_pem, pki["worker"]) as channel:
        stub = pb_grpc.ComputeServiceStub(channel)
        payload = cloudpickle.dumps((inc, (41,), {}))
        response = stub.Run(
            pb.RunRequest(
                job=pb.JobSpec(
                    pickled_call=pb.PickledCall(payload=payload), scheduler=pb.SCHEDULER_THREADS
                )
            ),
            timeout=30,
        )
        assert response.job.state == pb.JOB_STATE_SUCCEEDED
        assert response.job.owner == "cert:worker-7", "the certificate's CN names the caller"
        # A token on the same connection wins over the certificate.
        assert ping(channel, ALICE).job.owner == "alice"


def test_an_unregistered_certificate_needs_a_token(mtls_server, pki):
    with secure(mtls_server.target, pki["ca"].cert_pem, pki["unregistered"]) as channel:
        with pytest.raises(grpc.RpcError) as info:
            ping(channel)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "no 'cert:unregistered' entry" in info.value.details()
        assert ping(channel, ALICE).job.owner == "alice"
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING


def test_the_sdk_and_cli_connect_with_a_client_certificate(mtls_server, pki):
    import subprocess
    import sys
    from pathlib import Path

    from client_sdk import ComputeClient, ServiceUnavailable, TLSConfig

    worker = pki["worker"]
    tls = TLSConfig(ca=pki["ca"].cert_path, cert=worker.cert_path, key=worker.key_path)
    with ComputeClient(mtls_server.target, tls=tls, timeout=30) as client:
        assert client.run("add", 2, 3) == 5
        assert client.submit(inc, 1, scheduler="threads").result(timeout=30) == 2
    with ComputeClient(mtls_server.target, tls=str(pki["ca"].cert_path), timeout=5) as client:
        with pytest.raises(ServiceUnavailable):
            client.run("ping")  # no client certificate: refused in the handshake
    cli = str(Path(sys.executable).with_name("dask-compute"))
    tls_args = [
        "--tls-ca",
        str(pki["ca"].cert_path),
        "--tls-cert",
        str(worker.cert_path),
        "--tls-key",
        str(worker.key_path),
    ]
    ran = subprocess.run(
        [cli, *tls_args, "run", "add", "2", "3", "--target", mtls_server.target],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 0 and ran.stdout.strip() == "5", ran.stderr
    health = subprocess.run(
        [cli, *tls_args, "health", "--target", mtls_server.target],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert health.returncode == 0 and health.stdout.strip() == "SERVING", health.stderr
    ready = subprocess.run(
        [
            cli,
            *tls_args,
            "health",
            "--service",
            "compute.v1.ComputeService",
            "--target",
            mtls_server.target,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ready.returncode == 0 and ready.stdout.strip() == "SERVING", ready.stderr
    plain = subprocess.run(
        [cli, "health", "--target", mtls_server.target, "--timeout", "5"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert plain.returncode == 1
