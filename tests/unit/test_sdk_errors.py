"""Mapping failed calls to the SDK's exceptions (no server).

Real failures of every kind the service can produce are in
tests/integration/test_sdk_errors.py. ``PermissionDenied`` cannot come from the
service yet (it has no authentication), so its mapping is checked here, and
end to end against a stand-in server in tests/integration/test_sdk_auth.py.
"""

from __future__ import annotations

import concurrent.futures

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from client_sdk import _channel, _convert, errors
from client_sdk.types import JobError, JobInfo, JobState


class FakeRpcError(grpc.RpcError):
    """The three accessors the SDK reads from a failed call (a unit seam)."""

    def __init__(self, code: grpc.StatusCode, details: str, trailing=()) -> None:
        self._code, self._details, self._trailing = code, details, trailing

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self):
        return self._trailing


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, errors.InvalidArguments),
        (grpc.StatusCode.NOT_FOUND, errors.NotFound),
        (grpc.StatusCode.PERMISSION_DENIED, errors.PermissionDenied),
        (grpc.StatusCode.UNAUTHENTICATED, errors.PermissionDenied),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, errors.ResourceExhausted),
        (grpc.StatusCode.FAILED_PRECONDITION, errors.FailedPrecondition),
        (grpc.StatusCode.UNAVAILABLE, errors.ServiceUnavailable),
        (grpc.StatusCode.DEADLINE_EXCEEDED, errors.DeadlineExceeded),
        (grpc.StatusCode.INTERNAL, errors.RPCError),
    ],
)
def test_each_status_code_maps_to_its_exception(code, expected) -> None:
    exc = _channel.error_from_rpc(FakeRpcError(code, "why"))
    assert type(exc) is expected
    assert exc.code is errors.StatusCode[code.name]
    assert exc.details == "why"
    assert str(exc) == f"{code.name}: why"


def test_the_servers_reason_tells_not_found_apart() -> None:
    for reason, cls in (
        ("FUNCTION_NOT_FOUND", errors.FunctionNotFound),
        ("JOB_NOT_FOUND", errors.JobNotFound),
    ):
        status = status_pb2.Status(code=5, message="gone")
        status.details.add().Pack(error_details_pb2.ErrorInfo(reason=reason, domain="compute.v1"))
        trailing = ((_channel.DETAILS_KEY, status.SerializeToString()),)
        exc = _channel.error_from_rpc(FakeRpcError(grpc.StatusCode.NOT_FOUND, "gone", trailing))
        assert exc.reason == reason
        assert type(exc) is cls
        assert isinstance(exc, errors.NotFound)


def test_a_deadline_without_a_connection_is_unavailability() -> None:
    err = FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
    exc = _channel.error_from_rpc(err, unreachable="no connection to h:1 within 1s")
    assert type(exc) is errors.ServiceUnavailable
    assert exc.code is errors.StatusCode.DEADLINE_EXCEEDED
    assert "no connection to h:1" in str(exc)


def test_timeouts_and_cancellations_are_also_the_standard_exceptions() -> None:
    assert issubclass(errors.JobTimeout, TimeoutError)
    assert issubclass(errors.JobCancelled, concurrent.futures.CancelledError)
    for cls in (errors.JobTimeout, errors.JobCancelled, errors.JobFailed, errors.VersionMismatch):
        assert issubclass(cls, errors.ComputeError)


def _failed(error: JobError) -> JobInfo:
    return JobInfo(
        "j1",
        JobState.FAILED,
        "threads",
        "pickled_call",
        "f",
        "",
        None,
        None,
        None,
        error,
        "",
        False,
    )


def _pickled_from_a_module_we_lack() -> bytes:
    # An exception pickled by reference to a module that then goes away, as
    # when the server raises a type installed only there.
    import pickle
    import sys
    import types

    module = types.ModuleType("no_such_module_")
    exec("class Err(Exception):\n    pass", module.__dict__)
    module.Err.__module__ = module.__name__
    sys.modules[module.__name__] = module
    try:
        return pickle.dumps(module.Err("bad"))
    finally:
        del sys.modules[module.__name__]


def test_an_exception_that_cannot_be_loaded_here_is_job_failed() -> None:
    payload = _pickled_from_a_module_we_lack()
    exc = _convert.job_exception(
        _failed(JobError("no_such_module_.Err", "bad", "Traceback...", payload)), trusted=True
    )
    assert isinstance(exc, errors.JobFailed)
    assert (exc.type, exc.message, exc.remote_traceback) == (
        "no_such_module_.Err",
        "bad",
        "Traceback...",
    )


def test_a_loadable_exception_is_re_raised_with_the_remote_traceback_as_a_note() -> None:
    import cloudpickle

    error = JobError(
        "builtins.KeyError", "'k'", "Traceback: remote lines", cloudpickle.dumps(KeyError("k"))
    )
    exc = _convert.job_exception(_failed(error), trusted=True)
    assert type(exc) is KeyError
    assert exc.__notes__ == ["Remote traceback of job j1:\nTraceback: remote lines"]
