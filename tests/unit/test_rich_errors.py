"""The standard error details (google.rpc.Status) the server sends, and the SDK reads.

server.status builds them from the exceptions of server.errors; the SDK's one
mapping (client_sdk._channel.error_from_rpc) turns them back into ``.reason``,
``.metadata``, ``.retry_delay`` and ``.field_violations``. No server here: the
real calls are in tests/integration/test_rich_errors.py.
"""

from __future__ import annotations

import pathlib
import pickle
import re

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from client_sdk import _channel
from client_sdk import errors as sdk
from server import errors
from server.status import DETAILS_KEY, PUSHBACK_KEY, status_of

ROOT = pathlib.Path(__file__).resolve().parents[2]


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


def _details(exc: Exception) -> tuple[status_pb2.Status, dict[str, object]]:
    """The google.rpc.Status answered for ``exc``, and its details by type name."""
    status = status_of(exc, "Run")
    (packed,) = [value for key, value in status.metadata if key == DETAILS_KEY]
    rich = status_pb2.Status.FromString(packed)
    assert rich.code == status.code.value[0] and rich.message == status.message
    found: dict[str, object] = {}
    for detail in rich.details:
        for cls in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.BadRequest,
            error_details_pb2.RetryInfo,
            error_details_pb2.ResourceInfo,
        ):
            if detail.Is(cls.DESCRIPTOR):
                message = cls()
                detail.Unpack(message)
                found[cls.__name__] = message
    assert len(found) == len(rich.details), "one detail of each type at most"
    return rich, found


def _sdk(exc: Exception) -> sdk.RPCError:
    """What the SDK raises for a call answered for ``exc``."""
    status = status_of(exc, "Run")
    error = _channel.error_from_rpc(FakeRpcError(status.code, status.message, status.metadata))
    assert isinstance(error, sdk.RPCError)
    return error


def test_every_error_carries_an_error_info_with_its_reason_domain_and_metadata():
    exc = errors.ResourceExhausted(
        "too many",
        reason="CALLER_JOB_LIMIT",
        metadata={"limit_name": "max_jobs_per_caller", "limit": 2},
    )
    _, found = _details(exc)
    info = found["ErrorInfo"]
    assert info.reason == "CALLER_JOB_LIMIT" and info.domain == "compute.v1"
    assert dict(info.metadata) == {"limit_name": "max_jobs_per_caller", "limit": "2"}


def test_an_unexpected_error_carries_internal_error_and_its_incident_only():
    rich, found = _details(KeyError("password=hunter2"))
    info = found["ErrorInfo"]
    assert info.reason == "INTERNAL_ERROR" and set(info.metadata) == {"incident"}
    assert info.metadata["incident"] in rich.message
    assert "hunter2" not in str(rich)


def test_an_argument_error_names_its_field_in_a_bad_request():
    exc = errors.InvalidArgument("timeout must not be negative", field="timeout")
    _, found = _details(exc)
    (violation,) = found["BadRequest"].field_violations
    assert violation.field == "timeout" and violation.description == str(exc)
    assert "BadRequest" not in _details(errors.InvalidArgument("no field"))[1]


def test_a_missing_job_function_or_object_is_a_resource_info():
    for exc, kind, key in (
        (errors.JobNotFound("no job", resource_name="j-1"), "job", "job_id"),
        (errors.FunctionNotFound("no fn", resource_name="nope"), "function", "function"),
        (
            errors.NotFound("no obj", resource_type="object", resource_name="sha256:ab"),
            "object",
            None,
        ),
    ):
        _, found = _details(exc)
        resource = found["ResourceInfo"]
        assert (resource.resource_type, resource.resource_name) == (kind, exc.resource_name)
        if key is not None:
            assert found["ErrorInfo"].metadata[key] == exc.resource_name


def test_a_delay_is_a_retry_info_and_grpcs_own_pushback():
    exc = errors.Unavailable("starting", reason="CLUSTER_STARTING", retry_delay=1.5)
    _, found = _details(exc)
    delay = found["RetryInfo"].retry_delay
    assert (delay.seconds, delay.nanos) == (1, 500_000_000)
    assert (PUSHBACK_KEY, "1500") in status_of(exc, "Run").metadata
    plain = errors.ResourceExhausted("too large", reason="OBJECT_TOO_LARGE")
    assert "RetryInfo" not in _details(plain)[1]
    assert PUSHBACK_KEY not in dict(status_of(plain, "Run").metadata)


def test_the_details_stay_small_whatever_the_caller_sent():
    huge = "x" * 100_000
    exc = errors.FunctionNotFound(f"no function named {huge!r}", resource_name=huge)
    status = status_of(exc, "Run")
    assert sum(len(value) for _, value in status.metadata) < 4000


def test_the_sdk_reads_reason_metadata_delay_and_violations():
    error = _sdk(
        errors.ResourceExhausted(
            "wait", reason="CALLER_JOB_LIMIT", metadata={"limit": 2}, retry_delay=0.25
        )
    )
    assert type(error) is sdk.ResourceExhausted
    assert (error.reason, error.metadata, error.retry_delay) == (
        "CALLER_JOB_LIMIT",
        {"limit": "2"},
        0.25,
    )
    error = _sdk(errors.InvalidArgument("bad n", field="n", reason="INVALID_ARGUMENTS"))
    assert error.field_violations == (("n", "bad n"),) and error.retry_delay is None
    assert type(_sdk(errors.FunctionNotFound("no", resource_name="f"))) is sdk.FunctionNotFound
    assert type(_sdk(errors.JobNotFound("no", resource_name="j"))) is sdk.JobNotFound
    assert _sdk(errors.JobNotFound("no", resource_name="j")).metadata == {"job_id": "j"}


def test_the_sdk_ignores_details_that_do_not_parse_and_exposes_no_protobuf():
    trailing = ((DETAILS_KEY, b"\xff\xfe not a status"),)
    error = _channel.error_from_rpc(FakeRpcError(grpc.StatusCode.UNAVAILABLE, "x", trailing))
    assert type(error) is sdk.ServiceUnavailable
    assert (error.reason, error.metadata, error.retry_delay) == ("", {}, None)
    error = _sdk(errors.Unavailable("x", reason="CLUSTER_UNAVAILABLE", retry_delay=1.0))
    for value in vars(error).values():
        assert "google" not in type(value).__module__


def test_errors_keep_their_details_through_pickle():
    exc = errors.JobNotFound("no job", resource_name="j-1", reason="JOB_NOT_FOUND")
    back = pickle.loads(pickle.dumps(exc))
    assert (str(back), back.reason, back.metadata, back.resource_name) == (
        "no job",
        "JOB_NOT_FOUND",
        {"job_id": "j-1"},
        "j-1",
    )


def _reasons_raised() -> set[str]:
    reasons = {cls.reason for cls in _tree(errors.ServiceError)}
    for path in (ROOT / "server").rglob("*.py"):
        reasons |= set(re.findall(r'reason\s*(?:=|,)\s*"([A-Z][A-Z0-9_]+)"', path.read_text()))
    return reasons


def _tree(cls):
    yield cls
    for sub in cls.__subclasses__():
        yield from _tree(sub)


def test_every_reason_is_upper_snake_case_and_listed_in_the_proto():
    proto = (ROOT / "protos" / "compute" / "v1" / "compute.proto").read_text()
    reasons = _reasons_raised()
    assert len(reasons) > 30
    for reason in sorted(reasons):
        assert re.fullmatch(r"[A-Z][A-Z0-9]*(_[A-Z0-9]+)*", reason), reason
        assert re.search(rf"//\s+{reason}\b", proto), f"{reason} is not listed in compute.proto"


@pytest.mark.parametrize("cls", [errors.InvalidArgument, errors.NotFound, errors.Unavailable])
def test_class_defaults_hold_without_keywords(cls):
    exc = cls("text")
    assert exc.reason == cls.reason and exc.metadata == {} and str(exc) == "text"
