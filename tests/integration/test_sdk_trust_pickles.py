"""The SDK and CLI load pickles only of jobs submitted through them, unless told to trust them.

A ``code`` caller's job raises (or returns) an object whose pickle, when
loaded, runs a function that leaves a file behind: the trap. An admin who
attaches that job (``client.job(id)``, ``dask-compute wait JOB``) gets the
error's type, message and traceback text, or ``UntrustedResult`` for a
pickled result, and the trap stays shut; ``trust=True`` / ``--trust-pickles``
loads the pickle (and springs it), which shows the trap works.
"""

from __future__ import annotations

import pathlib

import cloudpickle
import grpc
import pytest

from client_sdk import ComputeClient, JobFailed, UntrustedResult
from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk._proto.compute.v1 import compute_pb2_grpc as pb_grpc
from tests.helpers import cli, running_server

pytestmark = pytest.mark.integration

ALICE = "alice-token-0123456789abcdef"
ROOT = "root-token-0123456789abcdef0"


def spring(path: str) -> ValueError:
    """Run when a trap's pickle is loaded: leaves ``path`` behind."""
    pathlib.Path(path).write_text("sprung")
    return ValueError("sprung")


class Trap(Exception):
    """An exception whose pickle, loaded, calls :func:`spring`."""

    def __init__(self, path: str) -> None:
        super().__init__(f"gotcha {pathlib.Path(path).name}")
        self.path = path

    def __reduce__(self):
        return spring, (self.path,)


class TrapValue:
    """A result whose pickle, loaded, calls :func:`spring`."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return spring, (self.path,)


def raise_trap(path: str) -> None:
    raise Trap(path)


def return_trap(path: str) -> TrapValue:
    return TrapValue(path)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    directory = tmp_path_factory.mktemp("trust")
    tokens = directory / "tokens"
    tokens.write_text(f"alice run,code {ALICE}\nroot admin {ROOT}\n")
    tokens.chmod(0o600)
    args = [
        "--no-processes",
        "--n-workers",
        "1",
        "--threads-per-worker",
        "2",
        "--dashboard-address",
        "",
        "--local-processes",
        "1",
        "--tokens-file",
        str(tokens),
    ]
    with running_server(args, directory / "serve.log") as running:
        yield running


def _alice_job(server, func, path: pathlib.Path) -> str:
    """Alice's finished job, submitted and waited for below the SDK (which would load it)."""
    metadata = (("authorization", f"Bearer {ALICE}"),)
    payload = cloudpickle.dumps((func, (str(path),), {}))
    spec = pb.JobSpec(pickled_call=pb.PickledCall(payload=payload), scheduler=pb.SCHEDULER_THREADS)
    with grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.ComputeServiceStub(channel)
        job = stub.SubmitJob(pb.SubmitJobRequest(job=spec), metadata=metadata, timeout=30).job
        done = stub.WaitJob(pb.WaitJobRequest(job_id=job.job_id), metadata=metadata, timeout=60)
    assert done.job.state in (pb.JOB_STATE_FAILED, pb.JOB_STATE_SUCCEEDED), done.job
    assert done.job.owner == "alice"
    return job.job_id


def test_an_admin_does_not_load_another_callers_exception(server, tmp_path):
    trap = tmp_path / "exception-trap"
    job_id = _alice_job(server, raise_trap, trap)
    with ComputeClient(server.target, token=ROOT, timeout=30) as admin:
        job = admin.job(job_id)
        assert job.info().owner == "alice"
        assert job.info().error.pickled_exception, "the server sent the pickle"
        with pytest.raises(JobFailed) as info:
            job.result(timeout=60)
        assert isinstance(job.exception(timeout=60), JobFailed)
        assert not trap.exists(), "the admin's process loaded alice's pickle"
        assert info.value.type.endswith("Trap") and info.value.message == "gotcha exception-trap"
        assert "raise_trap" in info.value.remote_traceback
        # Told to trust it, the admin loads it: the trap works.
        with pytest.raises(ValueError, match="sprung"):
            admin.job(job_id, trust=True).result(timeout=60)
    assert trap.exists()


def test_an_admin_does_not_load_another_callers_result(server, tmp_path):
    trap = tmp_path / "result-trap"
    job_id = _alice_job(server, return_trap, trap)
    with ComputeClient(server.target, token=ROOT, timeout=30) as admin:
        with pytest.raises(UntrustedResult, match=r"owner 'alice'.*trust=True") as info:
            admin.job(job_id).result(timeout=60)
        assert info.value.owner == "alice" and info.value.job_id == job_id
        assert not trap.exists()
        assert isinstance(admin.job(job_id, trust=True).result(timeout=60), ValueError)
    assert trap.exists()


def test_the_callers_own_client_loads_its_own_jobs_pickles(server, tmp_path):
    trap = tmp_path / "own-trap"
    with ComputeClient(server.target, token=ALICE, timeout=30) as alice:
        with pytest.raises(ValueError, match="sprung"):
            alice.submit(raise_trap, str(trap), scheduler="threads").result(timeout=60)
    assert trap.exists()


def test_the_cli_shows_another_callers_error_as_text_unless_told_to_trust(server, tmp_path):
    trap = tmp_path / "cli-trap"
    job_id = _alice_job(server, raise_trap, trap)
    done = cli("wait", job_id, "--token", ROOT, target=server.target)
    assert done.returncode == 1, done
    assert "job failed:" in done.stderr and "Trap: gotcha cli-trap" in done.stderr, done.stderr
    assert "raise_trap" in done.stderr, "the remote traceback is shown"
    assert not trap.exists(), "dask-compute wait loaded another caller's pickle"
    trusted = cli("wait", job_id, "--token", ROOT, "--trust-pickles", target=server.target)
    assert trusted.returncode == 1 and "job failed: ValueError: sprung" in trusted.stderr
    assert trap.exists()


def test_a_callers_own_job_from_another_process_is_loaded_without_trust(server, tmp_path):
    """Alice's job, submitted elsewhere (another process, the raw API), is still
    alice's: a new client with her token loads its pickles; the server says who
    the caller is."""
    trap = tmp_path / "own-elsewhere-trap"
    job_id = _alice_job(server, return_trap, trap)
    with ComputeClient(server.target, token=ALICE, timeout=30) as alice:
        assert alice.info().caller == "alice"
        assert isinstance(alice.job(job_id).result(timeout=60), ValueError)
    assert trap.exists(), "her own pickle was loaded"
    done = cli("wait", _alice_job(server, raise_trap, trap), "--token", ALICE, target=server.target)
    assert done.returncode == 1 and "job failed: ValueError: sprung" in done.stderr, done.stderr
