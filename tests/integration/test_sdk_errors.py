"""Each exception of the SDK, from a real failure against the real server.

``PermissionDenied`` is the exception: the service has no authentication yet,
so its mapping is tested in tests/unit/test_sdk_errors.py and, from a real
``UNAUTHENTICATED`` answer, against a stand-in server in test_sdk_auth.py.
"""

from __future__ import annotations

import socket
import time

import pytest

from client_sdk import (
    ComputeClient,
    FunctionNotFound,
    InvalidArguments,
    JobCancelled,
    JobFailed,
    JobNotFound,
    JobState,
    JobTimeout,
    ServiceUnavailable,
    VersionMismatch,
    Versions,
    _versions,
)
from client_sdk.errors import ComputeError, RPCError, StatusCode
from tests.helpers import CustomError, inc, slowinc, wait_until

pytestmark = pytest.mark.integration


def raise_custom(message):
    raise CustomError(message)


def raise_from_a_module_only_the_server_has(directory):
    """Import an exception type from a module written now, on the server's side only."""
    import importlib
    import pathlib
    import sys

    path = pathlib.Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    (path / "server_side_only_errors.py").write_text(
        "class ServerOnlyError(Exception):\n    pass\n"
    )
    sys.path.insert(0, str(path))
    try:
        module = importlib.import_module("server_side_only_errors")
    finally:
        sys.path.remove(str(path))
    raise module.ServerOnlyError("made on the server")


def test_function_not_found(client: ComputeClient) -> None:
    with pytest.raises(FunctionNotFound, match="no function named 'nope'") as info:
        client.run("nope")
    assert info.value.code is StatusCode.NOT_FOUND


def test_job_not_found(client: ComputeClient) -> None:
    with pytest.raises(JobNotFound, match="no job with id"):
        client.get_job("0" * 32)


def test_invalid_arguments_for_a_named_function(client: ComputeClient) -> None:
    with pytest.raises(InvalidArguments, match="missing required argument 'b'") as info:
        client.run("add", 1)
    assert info.value.code is StatusCode.INVALID_ARGUMENT
    with pytest.raises(InvalidArguments, match="must be JSON values"):
        client.run("add", object(), 1)


def test_invalid_arguments_for_a_payload_the_server_cannot_load(
    client: ComputeClient, tmp_path, monkeypatch
) -> None:
    # A module only this side has: its function travels by reference and the
    # server cannot import it.
    (tmp_path / "client_side_only.py").write_text("def double(x):\n    return 2 * x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from client_side_only import double

    with pytest.raises(
        InvalidArguments, match="module 'client_side_only' is not installed on the server"
    ):
        client.submit(double, 2)


def test_the_remote_exception_is_re_raised_with_its_traceback(client: ComputeClient) -> None:
    for scheduler in ("distributed", "threads", "processes", "synchronous"):
        job = client.submit(raise_custom, "custom", scheduler=scheduler)
        with pytest.raises(CustomError, match="custom") as info:
            job.result(timeout=60)
        notes = "\n".join(getattr(info.value, "__notes__", []))
        assert "Remote traceback of job" in notes and "raise_custom" in notes, scheduler


def test_job_failed_when_the_exception_cannot_be_rebuilt_here(
    client: ComputeClient, tmp_path
) -> None:
    job = client.submit(
        raise_from_a_module_only_the_server_has, str(tmp_path / "srv"), scheduler="threads"
    )
    with pytest.raises(JobFailed) as info:
        job.result(timeout=60)
    failed = info.value
    assert failed.type == "server_side_only_errors.ServerOnlyError"
    assert failed.message == "made on the server"
    assert "raise_from_a_module_only_the_server_has" in failed.remote_traceback
    assert job.info().error.type == failed.type


def test_job_timeout_from_a_wait(client: ComputeClient) -> None:
    job = client.submit(slowinc, 1, delay=1.0, scheduler="synchronous")
    with pytest.raises(JobTimeout, match="did not finish within 0.2s"):
        job.result(timeout=0.2)
    with pytest.raises(JobTimeout, match="did not finish within 0.2s"):
        client.wait(job.job_id, timeout=0.2)
    assert job.result(timeout=30) == 2  # the job went on


def test_job_timeout_from_run_cancels_the_job(client: ComputeClient) -> None:
    started = time.monotonic()
    with pytest.raises(
        JobTimeout, match="did not finish within 0.5s; the server cancelled it"
    ) as info:
        client.run("sleep", 5, scheduler="synchronous", timeout=0.5)
    assert time.monotonic() - started < 4
    assert isinstance(info.value.__cause__, RPCError)
    job = wait_until(
        lambda: next((j for j in client.list_jobs(limit=1) if j.state is JobState.CANCELLED), None),
        timeout=10,
        message="the timed-out job to be cancelled",
    )
    assert job.target == "sleep"


def test_job_cancelled(client: ComputeClient) -> None:
    job = client.submit(slowinc, 1, delay=10, scheduler="synchronous")
    client.cancel(job.job_id, reason="no longer needed")
    with pytest.raises(JobCancelled, match="no longer needed"):
        job.result(timeout=30)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("timeout", [0.5, 5.0])
def test_service_unavailable_on_a_closed_port(timeout: float) -> None:
    started = time.monotonic()
    with ComputeClient(f"127.0.0.1:{_closed_port()}", timeout=timeout) as client:
        with pytest.raises(ServiceUnavailable, match="127.0.0.1") as info:
            client.info()
        assert repr(client).endswith("not connected>")
    assert time.monotonic() - started < timeout + 5
    assert info.value.code in (StatusCode.UNAVAILABLE, StatusCode.DEADLINE_EXCEEDED)


def test_service_unavailable_for_a_job_call_too(tmp_path) -> None:
    with ComputeClient(f"127.0.0.1:{_closed_port()}", timeout=0.5) as client:
        with pytest.raises(ServiceUnavailable):
            client.run("ping")
        with pytest.raises(ServiceUnavailable):
            client.submit(inc, 1)  # the version check is the first call


_MINE = _versions.local_versions()


def _mismatched(**changes: str) -> Versions:
    mine = _MINE
    fields = {f: getattr(mine, f) for f in ("python", "dask", "distributed", "cloudpickle")}
    return Versions(**{**fields, **changes})


def test_version_mismatch_refuses_pickled_work_before_sending_it(server, monkeypatch) -> None:
    monkeypatch.setattr(_versions, "local_versions", lambda: _mismatched(python="3.9.18"))
    with ComputeClient(server.target, timeout=60) as client:
        server_python = client.info().versions.python
        newest = next(iter(client.list_jobs(limit=1))).job_id
        with pytest.raises(
            VersionMismatch, match=rf"Python 3\.9\.18 here, {server_python} on the server"
        ):
            client.submit(inc, 1)
        import dask

        with pytest.raises(VersionMismatch):
            client.compute(dask.delayed(inc)(1))
        with pytest.raises(VersionMismatch):
            client.map(inc, [1, 2])
        assert next(iter(client.list_jobs(limit=1))).job_id == newest  # nothing was sent
        assert client.run("add", 1, 2) == 3  # JSON calls carry no pickled code


def test_differing_dask_versions_are_refused_unless_allowed(server, monkeypatch) -> None:
    monkeypatch.setattr(_versions, "local_versions", lambda: _mismatched(dask="2024.1.0"))
    with ComputeClient(server.target, timeout=60) as strict:
        with pytest.raises(VersionMismatch, match="dask 2024.1.0 here") as info:
            strict.submit(inc, 1)
        assert "check_versions=False" in str(info.value)
    with ComputeClient(server.target, timeout=60, check_versions=False) as relaxed:
        assert relaxed.submit(inc, 1).result(timeout=30) == 2


def test_every_sdk_error_is_a_compute_error() -> None:
    import client_sdk

    exported = [getattr(client_sdk, name) for name in client_sdk.__all__]
    errors = [obj for obj in exported if isinstance(obj, type) and issubclass(obj, Exception)]
    assert len(errors) == 16  # UntrustedResult joined the 15
    assert all(issubclass(cls, ComputeError) for cls in errors)
