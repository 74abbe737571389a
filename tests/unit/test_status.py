"""The one mapping from exceptions to status codes, and the scope that counts each call."""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from server import errors
from server.status import DETAILS_KEY, MAX_DETAILS_BYTES, Answers, code_of, status_of

#: Every class of the tree and the code it is answered with (docstring of server.errors).
TREE = {
    errors.ServiceError: grpc.StatusCode.INTERNAL,
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.InvalidPayload: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.FunctionNotFound: grpc.StatusCode.NOT_FOUND,
    errors.JobNotFound: grpc.StatusCode.NOT_FOUND,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def _tree(cls=errors.ServiceError):
    yield cls
    for sub in cls.__subclasses__():
        yield from _tree(sub)


def _error_info(metadata) -> error_details_pb2.ErrorInfo:
    """The ErrorInfo of the google.rpc.Status in ``metadata`` (the trailer sent)."""
    (packed,) = [value for key, value in metadata if key == DETAILS_KEY]
    info = error_details_pb2.ErrorInfo()
    assert status_pb2.Status.FromString(packed).details[0].Unpack(info)
    return info


def test_the_table_covers_every_class_of_the_tree():
    assert {c for c in _tree() if c.__module__ == "server.errors"} == set(TREE)


@pytest.mark.parametrize("cls", list(TREE), ids=lambda c: c.__name__)
def test_each_class_is_answered_with_its_code_its_message_and_its_reason(cls):
    status = status_of(cls("what went wrong"), "GetJob")
    assert status.code == TREE[cls] == code_of(cls("x"))
    assert status.message == "what went wrong"
    info = _error_info(status.metadata)
    assert (info.reason, info.domain) == (cls.reason, "compute.v1")


def test_an_unexpected_error_is_internal_with_a_fixed_message_and_a_logged_traceback(caplog):
    secret = "password=hunter2"
    with caplog.at_level(logging.ERROR, logger="server.status"):
        try:
            raise KeyError(secret)
        except KeyError as exc:
            status = status_of(exc, "GetJob")
    assert status.code == grpc.StatusCode.INTERNAL
    assert secret not in str(status.metadata)
    assert secret not in status.message and "KeyError" not in status.message
    assert status.message.startswith("internal error in GetJob (incident ")
    incident = status.message.split("incident ")[1].split(")")[0]
    (record,) = caplog.records
    assert incident in record.getMessage() and record.exc_info[0] is KeyError


def test_an_error_naming_no_status_code_is_unexpected(caplog):
    class Odd(errors.ServiceError):
        status = "NO_SUCH_CODE"

    with caplog.at_level(logging.ERROR, logger="server.status"):
        status = status_of(Odd("text"), "Run")
    assert status.code == grpc.StatusCode.INTERNAL and "text" not in status.message
    assert code_of(Odd()) == grpc.StatusCode.INTERNAL
    assert len(caplog.records) == 1


def test_a_cancellation_is_cancelled_and_anything_else_internal():
    assert code_of(asyncio.CancelledError()) == grpc.StatusCode.CANCELLED
    assert code_of(ValueError()) == grpc.StatusCode.INTERNAL
    assert code_of(GeneratorExit()) == grpc.StatusCode.INTERNAL


def test_long_messages_are_cut_to_fit_in_status_metadata():
    status = status_of(errors.InvalidArgument("é" * 5000), "Run")
    assert len(status.message.encode()) <= MAX_DETAILS_BYTES + len("... (truncated)")
    assert status.message.endswith("... (truncated)")


class _Context:
    """The parts of a grpc.aio servicer context that an answer uses."""

    def __init__(self, code=None):
        self.trailing, self.aborted, self._code = None, None, code

    def set_trailing_metadata(self, metadata):
        self.trailing = metadata

    async def abort(self, code, message, trailing_metadata=()):
        self.aborted = (code, message, trailing_metadata)
        raise grpc.aio.AbortError()

    def code(self):
        return self._code


class _Metrics:
    def __init__(self):
        self.calls = []

    def rpc(self, method, code, seconds, received, sent):
        self.calls.append((method, code, received, sent))


async def _answer(answers, context, raised):
    async with answers.answering("GetJob", 7, context) as answering:
        answering.sent = 3
        if raised is not None:
            raise raised


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("raised", "code", "escapes"),
    [
        (None, "OK", None),
        (errors.JobNotFound("no job"), "NOT_FOUND", grpc.aio.AbortError),
        (RuntimeError("bug"), "INTERNAL", grpc.aio.AbortError),
        (asyncio.CancelledError(), "CANCELLED", asyncio.CancelledError),
    ],
)
async def test_a_call_is_counted_with_the_code_it_is_answered_with(raised, code, escapes):
    metrics, context = _Metrics(), _Context()
    answers = Answers(metrics, (("instance", "i"),))
    if escapes is None:
        await _answer(answers, context, raised)
    else:
        with pytest.raises(escapes):
            await _answer(answers, context, raised)
    assert metrics.calls == [("GetJob", code, 7, 3)]
    assert context.trailing == (("instance", "i"),)
    if escapes is grpc.aio.AbortError:
        assert context.aborted[0].name == code
        assert context.aborted[2][0] == ("instance", "i"), (
            "the service's metadata, then the error's"
        )


@pytest.mark.asyncio
async def test_a_call_aborted_elsewhere_is_counted_with_the_code_it_was_aborted_with():
    metrics = _Metrics()
    context = _Context(code=grpc.StatusCode.NOT_FOUND)
    with pytest.raises(grpc.aio.AbortError):
        await _answer(Answers(metrics), context, grpc.aio.AbortError())
    assert metrics.calls == [("GetJob", "NOT_FOUND", 7, 3)]
    assert context.aborted is None, "answered once, by whoever aborted it"


@pytest.mark.asyncio
async def test_a_refusal_is_answered_and_counted_like_an_error_of_the_servicer():
    metrics, context = _Metrics(), _Context()
    with pytest.raises(grpc.aio.AbortError):
        await Answers(metrics).refuse("Run", context, errors.Unauthenticated("no token"), 12)
    assert metrics.calls == [("Run", "UNAUTHENTICATED", 12, 0)]
    code, message, trailing = context.aborted
    assert (code, message) == (grpc.StatusCode.UNAUTHENTICATED, "no token")
    assert _error_info(trailing).reason == "CREDENTIAL_REQUIRED"
