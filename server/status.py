"""The one place that chooses the status code of a call, and counts the call.

:func:`status_of` maps an exception to what the caller is told: a
:class:`server.errors.ServiceError` to the status its class names, with its
message and the standard error details (a ``google.rpc.Status`` in the
``grpc-status-details-bin`` trailer, built with ``grpcio-status``): an
``ErrorInfo`` with the error's reason, the domain ``compute.v1`` and its
metadata; a ``BadRequest`` field violation for an argument error that names
its field; a ``ResourceInfo`` for a missing job, function, object or result;
a ``RetryInfo`` (and gRPC's own ``grpc-retry-pushback-ms``, which gRPC
clients' retry policies honour) where waiting helps. Anything else is
``INTERNAL`` with a fixed message naming an incident (an ``ErrorInfo``
``INTERNAL_ERROR`` with the incident id), its traceback logged under that
incident here, never its text sent.

:class:`Answers` is how a service answers: every answer carries the
service's trailing metadata, errors go through :func:`status_of`, and each
call is counted in the RPC metrics with the code it was answered with. The
servicer (:mod:`server.servicer`) answers its calls through it, and the
caller interceptor (:mod:`server.interceptors`) answers the calls it refuses
(no valid credential, a request that does not parse) through the same
object, so that refusals are counted with their real code too.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging
import time
import uuid
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

import grpc
from google.protobuf import duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from server.errors import DOMAIN, InvalidArgument, NotFound, ServiceError

if TYPE_CHECKING:  # (3.10 has no typing.Self)
    from typing_extensions import Self

logger = logging.getLogger(__name__)

#: Bytes of the request of the call that the current task answers, as received
#: (set by the caller interceptor before it parses them), so that answering and
#: the servicer need not walk a large parsed message to learn its size.
RECEIVED_BYTES: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "received_bytes", default=None
)


def received_bytes(request: Any) -> int:
    """Bytes of ``request``: as received when the interceptor said, else its encoded size."""
    known = RECEIVED_BYTES.get()
    if known is not None:
        return known
    return request.ByteSize() if hasattr(request, "ByteSize") else 0


#: Trailing metadata key of the ``google.rpc.Status`` (the standard error details).
DETAILS_KEY = "grpc-status-details-bin"
#: Trailing metadata key of gRPC's retry pushback: the milliseconds a gRPC
#: client's retry policy waits before its next attempt (gRFC A6).
PUSHBACK_KEY = "grpc-retry-pushback-ms"

#: Longest status message sent, in UTF-8 bytes. Messages may quote the caller's
#: input, and clients refuse status metadata past 8 to 16 KiB (percent-encoding
#: can triple a message's size).
MAX_DETAILS_BYTES = 2000
#: Longest ``ErrorInfo.metadata`` value or ``ResourceInfo.resource_name`` sent,
#: and longest field violation description, in UTF-8 bytes (they may quote the
#: caller's input too, and all of them travel in one trailer).
MAX_FACT_BYTES = 256
MAX_VIOLATION_BYTES = 512

Metadata = tuple[tuple[str, str | bytes], ...]


@dataclasses.dataclass(frozen=True)
class Status:
    """What a failed call is answered with.

    Attributes:
        code: The status code.
        message: The status message (at most :data:`MAX_DETAILS_BYTES`).
        metadata: Trailing metadata: the ``google.rpc.Status``, and the
            retry pushback when the error suggests a delay.
    """

    code: grpc.StatusCode
    message: str
    metadata: Metadata = ()


def details(message: str, limit: int = MAX_DETAILS_BYTES) -> str:
    """``message``, cut to ``limit`` (:data:`MAX_DETAILS_BYTES`) UTF-8 bytes."""
    data = message.encode("utf-8", "replace")
    if len(data) <= limit:
        return message
    return data[:limit].decode("utf-8", "ignore") + "... (truncated)"


def error_details(exc: ServiceError, message: str) -> list[Message]:
    """The standard error details of ``exc``, told with ``message``.

    An ``ErrorInfo`` always; a ``BadRequest`` when an argument error names
    its field; a ``ResourceInfo`` when a missing thing names its type; a
    ``RetryInfo`` when the error suggests a delay.
    """
    facts = {key: details(value, MAX_FACT_BYTES) for key, value in exc.metadata.items()}
    found: list[Message] = [
        error_details_pb2.ErrorInfo(reason=exc.reason, domain=DOMAIN, metadata=facts)
    ]
    if isinstance(exc, InvalidArgument) and exc.field:
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=details(exc.field, MAX_FACT_BYTES),
            description=details(message, MAX_VIOLATION_BYTES),
        )
        found.append(error_details_pb2.BadRequest(field_violations=[violation]))
    if isinstance(exc, NotFound) and exc.resource_type:
        found.append(
            error_details_pb2.ResourceInfo(
                resource_type=exc.resource_type,
                resource_name=details(exc.resource_name, MAX_FACT_BYTES),
            )
        )
    if exc.retry_delay is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(round(exc.retry_delay * 1e9))
        found.append(error_details_pb2.RetryInfo(retry_delay=delay))
    return found


def _rich(
    code: grpc.StatusCode, message: str, found: list[Message], retry_delay: float | None = None
) -> Status:
    """A :class:`Status` carrying ``found`` as a ``google.rpc.Status`` (``grpcio-status``)."""
    packed = status_pb2.Status(code=code.value[0], message=message)
    for detail in found:
        packed.details.add().Pack(detail)
    rich = rpc_status.to_status(packed)
    metadata: Metadata = tuple(rich.trailing_metadata)
    if retry_delay is not None:
        metadata += ((PUSHBACK_KEY, str(max(0, round(retry_delay * 1000)))),)
    return Status(rich.code, rich.details, metadata)


def _named(status: Any) -> grpc.StatusCode | None:
    code = getattr(grpc.StatusCode, status, None) if isinstance(status, str) else None
    return code if isinstance(code, grpc.StatusCode) else None


def code_of(exc: BaseException) -> grpc.StatusCode:
    """The status code a call that raised ``exc`` ends with.

    A :class:`ServiceError` has the code its class names; a cancellation
    (the caller went away, or its deadline passed) is ``CANCELLED``; anything
    else is ``INTERNAL``.
    """
    if isinstance(exc, ServiceError):
        return _named(exc.status) or grpc.StatusCode.INTERNAL
    if isinstance(exc, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.INTERNAL


def status_of(exc: Exception, method: str) -> Status:
    """What a call of ``method`` that raised ``exc`` is answered with.

    An unexpected error (not a :class:`ServiceError`, or one naming no
    status code) is logged here with its traceback, under an incident id
    that the message gives; its text is never sent.
    """
    if isinstance(exc, ServiceError):
        code = _named(exc.status)
        if code is not None:
            message = details(str(exc))
            return _rich(code, message, error_details(exc, message), exc.retry_delay)
    incident = uuid.uuid4().hex[:12]
    logger.error("%s failed unexpectedly (incident %s)", method, incident, exc_info=exc)
    info = error_details_pb2.ErrorInfo(
        reason=ServiceError.reason, domain=DOMAIN, metadata={"incident": incident}
    )
    return _rich(
        grpc.StatusCode.INTERNAL,
        f"internal error in {method} (incident {incident}); the server log has the details",
        [info],
    )


async def abort(
    context: grpc.aio.ServicerContext, status: Status, metadata: Metadata = ()
) -> NoReturn:
    """End the call with ``status``, ``metadata`` before the status's own.

    Raises:
        grpc.aio.AbortError: Always (that is how grpc ends a call).
    """
    await context.abort(
        status.code, status.message, trailing_metadata=(*metadata, *status.metadata)
    )
    raise AssertionError("context.abort returned")  # not reached: abort raises


def _aborted_code(context: Any) -> str:
    """The code a call was aborted with elsewhere (``context.abort`` raises AbortError)."""
    code = context.code() if hasattr(context, "code") else None
    return code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"


class RpcMetrics(Protocol):
    """What :class:`Answers` counts calls with (:class:`server.metrics.Metrics`)."""

    def rpc(self, method: str, code: str, seconds: float, received: int, sent: int) -> None:
        """Count an answered RPC."""


class Answers:
    """How a service answers its calls: metadata, status codes and metrics.

    Args:
        metrics: Where each call is counted, with its method's short name
            (``GetJob``) and the name of the code it ended with.
        metadata: Trailing metadata sent with every answer, errors included.
    """

    def __init__(self, metrics: RpcMetrics, metadata: Metadata = ()) -> None:
        self.metrics = metrics
        self.metadata = metadata

    def answering(self, name: str, request: Any, context: grpc.aio.ServicerContext) -> Answering:
        """The scope of answering one call of method ``name`` (see :class:`Answering`)."""
        return Answering(self, name, request, context)

    async def refuse(
        self, name: str, context: grpc.aio.ServicerContext, exc: Exception, received: int = 0
    ) -> NoReturn:
        """Answer a call of ``name`` that is refused before it reaches its handler.

        Raises:
            grpc.aio.AbortError: Always.
        """
        async with self.answering(name, received, context):
            raise exc
        raise AssertionError("the refusal was not raised")  # not reached


class Answering:
    """One call being answered, as an async context manager.

    On the way in, the service's trailing metadata is set. On the way out
    the call is counted with its code (``OK``, the code of the error it
    raised, ``CANCELLED``, or the code it was aborted with elsewhere), and
    an ``Exception`` is answered through :func:`status_of`. Set ``sent`` to
    the bytes of the response(s) sent.

    Args:
        answers: The service's :class:`Answers`.
        name: The method's short name.
        request: The request message, or the size in bytes of a request
            that was not parsed.
        context: The call's context.
    """

    def __init__(
        self, answers: Answers, name: str, request: Any, context: grpc.aio.ServicerContext
    ) -> None:
        self.answers, self.name, self.request, self.context = answers, name, request, context
        self.sent = 0

    async def __aenter__(self) -> Self:
        self.started = time.perf_counter()
        self.context.set_trailing_metadata(self.answers.metadata)
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        status = None
        if exc is None:
            code = "OK"
        elif isinstance(exc, grpc.aio.AbortError):
            code = _aborted_code(self.context)
        elif isinstance(exc, Exception):
            status = status_of(exc, self.name)
            code = status.code.name
        else:
            code = code_of(exc).name
        # Counted before the status goes out, so a caller that scrapes the
        # metrics right after its answer sees its call.
        request = self.request
        received = request if isinstance(request, int) else received_bytes(request)
        elapsed = time.perf_counter() - self.started
        self.answers.metrics.rpc(self.name, code, elapsed, received, self.sent)
        if status is not None:
            await abort(self.context, status, self.answers.metadata)  # raises
        return False
