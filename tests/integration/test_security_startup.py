"""Safe defaults at start-up: refusals in one line, the loud flag, and --no-pickled-work."""

from __future__ import annotations

import os
import re
import subprocess

import cloudpickle
import grpc
import pytest

from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk._proto.compute.v1 import compute_pb2_grpc as pb_grpc
from tests.helpers import BIN, ROOT, inc, running_server
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


def _clean_env(tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASK_COMPUTE_")}
    env.update(PYTHONPATH=str(ROOT), DASK_COMPUTE_JOB_STORE=f"sqlite:///{tmp_path / 'jobs.db'}")
    return env


def _refusal(args, tmp_path) -> str:
    """Run ``serve ARGS``, which must exit non-zero, and return its one error line.

    Settings errors are usage errors, which click prefixes with the usage line.
    """
    result = subprocess.run(
        [str(BIN / "dask-compute"), "serve", "--port", "0", *SERVER_ARGS, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=_clean_env(tmp_path),
        cwd=ROOT,
        check=False,
    )
    output = (result.stdout + result.stderr).strip()
    assert result.returncode != 0, output
    errors = [line for line in output.splitlines() if line.startswith("Error: ")]
    assert "Traceback" not in output and len(errors) == 1, output
    assert output.splitlines()[-1] == errors[0], output
    return errors[0]


def _pickled_inc() -> pb.JobSpec:
    return pb.JobSpec(
        pickled_call=pb.PickledCall(payload=cloudpickle.dumps((inc, (1,), {}))),
        scheduler=pb.SCHEDULER_THREADS,
    )


def _ping() -> pb.JobSpec:
    return pb.JobSpec(call=pb.FunctionCall(function="ping"))


def test_a_network_address_without_tokens_refuses_to_start(tmp_path):
    line = _refusal(["--host", "0.0.0.0"], tmp_path)
    assert line.startswith("Error: refusing to listen on 0.0.0.0 without authentication")
    assert "--insecure-no-auth-on-network" in line and "--tokens-file" in line


@pytest.mark.parametrize(
    "setup, message",
    [
        ("missing-tokens", "cannot read tokens file"),
        ("short-token", "shorter than 16 characters"),
        ("mismatched-key", "are not a PEM certificate and its private key"),
        ("ca-without-cert", "tls_client_ca (mutual TLS) needs tls_cert"),
    ],
)
def test_bad_credentials_stop_start_up_in_one_line(tmp_path, setup, message):
    ca = CertificateAuthority(tmp_path)
    server, other = ca.issue("localhost", server=True), ca.issue("other", server=True)
    tokens = tmp_path / "tokens"
    tokens.write_text("alice run short\n")
    tokens.chmod(0o600)
    args = {
        "missing-tokens": ["--tokens-file", str(tmp_path / "nope")],
        "short-token": ["--tokens-file", str(tokens)],
        "mismatched-key": ["--tls-cert", str(server.cert_path), "--tls-key", str(other.key_path)],
        "ca-without-cert": ["--tls-client-ca", str(ca.cert_path)],
    }[setup]
    assert message in _refusal(args, tmp_path)


def test_the_loud_flag_starts_on_the_network_but_refuses_pickled_work(tmp_path):
    args = [*SERVER_ARGS, "--host", "0.0.0.0", "--insecure-no-auth-on-network"]
    with running_server(args, tmp_path / "insecure.log", env=_clean_env(tmp_path)) as server:
        log = server.log()
        assert f"policy: auth=none tls=off pickled-work=off bind=0.0.0.0:{server.port}" in log
        assert "INSECURE: listening on 0.0.0.0 with no authentication" in log
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.ComputeServiceStub(channel)
            assert (
                stub.Run(pb.RunRequest(job=_ping()), timeout=30).job.state == pb.JOB_STATE_SUCCEEDED
            )
            with pytest.raises(grpc.RpcError) as info:
                stub.Run(pb.RunRequest(job=_pickled_inc()), timeout=30)
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_no_pickled_work_refuses_code_even_with_the_code_permission(tmp_path):
    env = {**_clean_env(tmp_path), "DASK_COMPUTE_TOKENS": f"alice run,code,admin {ALICE}"}
    with running_server(
        [*SERVER_ARGS, "--no-pickled-work"], tmp_path / "named.log", env=env
    ) as server:
        assert re.search(
            r"policy: auth=tokens\(1\) tls=off pickled-work=off bind=127\.0\.0\.1:\d+", server.log()
        )
        assert ALICE not in server.log()
        metadata = (("authorization", f"Bearer {ALICE}"),)
        with grpc.insecure_channel(server.target) as channel:
            stub = pb_grpc.ComputeServiceStub(channel)
            response = stub.Run(pb.RunRequest(job=_ping()), metadata=metadata, timeout=30)
            assert response.job.state == pb.JOB_STATE_SUCCEEDED and response.job.owner == "alice"
            with pytest.raises(grpc.RpcError) as info:
                stub.Run(pb.RunRequest(job=_pickled_inc()), metadata=metadata, timeout=30)
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_without_tokens_on_loopback_everything_is_allowed_as_before(tmp_path):
    with running_server(SERVER_ARGS, tmp_path / "open.log", env=_clean_env(tmp_path)) as server:
        assert (
            f"policy: auth=none tls=off pickled-work=anyone bind=127.0.0.1:{server.port}"
            in server.log()
        )
        with grpc.insecure_channel(server.target) as channel:
            stub = pb_grpc.ComputeServiceStub(channel)
            response = stub.Run(pb.RunRequest(job=_pickled_inc()), timeout=30)
            assert (
                response.job.state == pb.JOB_STATE_SUCCEEDED and response.job.owner == "anonymous"
            )
