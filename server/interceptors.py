"""The server interceptor that names the caller of every call and parses its request.

:class:`CallerInterceptor` wraps the handler of every method except those of
the health and reflection services (probes and ``grpcurl list`` need no
token). The wrapped handler runs in the call's own task, so

1. it authenticates the call (bearer token metadata, or the verified client
   certificate under mutual TLS), and refuses it with
   :class:`server.errors.Unauthenticated` saying what to send when that fails;
2. it parses the request itself, so that bytes that are not a valid message
   (corrupt, truncated, non-UTF-8 strings, nesting past protobuf's depth
   limit) are refused with :class:`server.errors.InvalidArgument` rather
   than answered grpc's ``UNKNOWN`` (or, in a request stream, ``INTERNAL``)
   with a logged traceback. Streamed requests are parsed as the servicer
   iterates them, so a servicer method must read its request iterator, never
   ``context.read()`` (which would give bytes);
3. it runs the servicer method with the caller set (:func:`server.auth.caller_scope`,
   or :func:`server.auth.set_caller` for handlers that yield), where
   :func:`server.auth.current_caller` gives it.

A refusal is an exception of :mod:`server.errors`, answered by
:mod:`server.status` like any error of the servicer: through the servicer's
own :class:`server.status.Answers` (given to the interceptor by
:func:`server.app.build_server`), so the refused call carries the service's
metadata and is counted in the RPC metrics with its real code; without one,
through :func:`server.status.status_of` alone.

Before it parses a ``Run``, ``SubmitJob`` or ``SubmitJobs`` request, it reads
the request's wire format just far enough to add up the bytes of its JSON
arguments (``call.args`` and ``call.kwargs``), and refuses a request past
``max_argument_bytes`` with :class:`server.errors.InvalidArgument` naming
``--max-argument-bytes``: protobuf parses a message holding the GIL, and
millions of small JSON values would hold the event loop (health checks
included) for as long as they take to parse.

Refusals are logged at INFO, rate-limited by :class:`RefusalLog`: one line
per peer address per :data:`REFUSAL_LOG_INTERVAL` seconds, the next one saying
how many more were refused meanwhile, for at most :data:`REFUSAL_LOG_PEERS`
addresses at once, so that callers without a credential cannot make the server
write a line per call. (Fixed, not settings: they bound what a caller can make
the server write, and the README says what they are.)

Wrapping the handler, rather than setting the context variable in
``intercept_service``, keeps the caller bound to the task that runs the
method, whatever task runs the interceptor, and gives access to the call's
``auth_context()`` (the client certificate), which ``intercept_service`` does
not see.
"""

from __future__ import annotations

import inspect
import logging
import time
import typing
from collections.abc import AsyncIterator, Callable
from typing import Any, NoReturn, cast

import grpc

from client_sdk._proto.compute.v1 import compute_pb2 as pb
from server import status
from server.auth import Authenticator, Caller, caller_scope, set_caller
from server.errors import InvalidArgument, ServiceError, Unauthenticated
from server.tls import peer_common_name

logger = logging.getLogger(__name__)

#: Services reachable without credentials.
OPEN_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)

#: Seconds between two log lines of refused calls from one peer address.
REFUSAL_LOG_INTERVAL = 10.0
#: Most peer addresses whose refusals are counted apart; past it, the others share one entry.
REFUSAL_LOG_PEERS = 1024


class RefusalLog:
    """Logs refused calls at most once per peer address per ``interval`` seconds.

    The first refusal from an address is logged; the ones after it within the
    interval are counted, and the next line from that address, once the
    interval has passed, says how many there were. At most ``max_peers``
    addresses are tracked at once (past that, all others share one entry), so
    neither the log nor this table grows with a flood of calls.
    """

    OTHERS = "other peers"

    def __init__(
        self,
        interval: float = REFUSAL_LOG_INTERVAL,
        max_peers: int = REFUSAL_LOG_PEERS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self.max_peers = max_peers
        self.clock = clock
        # address -> [time of its last line, refusals not logged since]
        self._peers: dict[str, list[float | int]] = {}

    def refused(self, method: str, peer: str, exc: Exception) -> bool:
        """Log (or count) one refusal; whether a line was written."""
        now = self.clock()
        address = _address_of(peer)
        entry = self._peers.get(address)
        if entry is None:
            self._forget_before(now - self.interval)
            if len(self._peers) >= self.max_peers:
                address = self.OTHERS
                entry = self._peers.get(address)
        if entry is not None and now - entry[0] < self.interval:
            entry[1] += 1
            return False
        skipped = entry[1] if entry is not None else 0
        self._peers[address] = [now, 0]
        if skipped:
            logger.info(
                "refused %s from %s: %s (and %d more refused calls from %s in the last %.0f s)",
                method, peer, exc, skipped, address, self.interval,
            )  # fmt: skip
        else:
            logger.info("refused %s from %s: %s", method, peer, exc)
        return True

    def _forget_before(self, cutoff: float) -> None:
        if len(self._peers) < self.max_peers:
            return
        for address, (last, skipped) in list(self._peers.items()):
            if last < cutoff and not skipped:
                del self._peers[address]


def _field(message: Any, name: str) -> int:
    return message.DESCRIPTOR.fields_by_name[name].number


_JOB_FIELD = {
    "/compute.v1.ComputeService/Run": _field(pb.RunRequest, "job"),
    "/compute.v1.ComputeService/SubmitJob": _field(pb.SubmitJobRequest, "job"),
    "/compute.v1.ComputeService/SubmitJobs": _field(pb.SubmitJobsRequest, "jobs"),
}
_CALL_FIELD = _field(pb.JobSpec, "call")
_ARGUMENT_FIELDS = (_field(pb.FunctionCall, "args"), _field(pb.FunctionCall, "kwargs"))


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(data: memoryview) -> typing.Iterator[tuple[int, memoryview]]:
    """The length-delimited fields of one message's wire format, as (number, bytes)."""
    pos, end = 0, len(data)
    while pos < end:
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(data, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _varint(data, pos)
            if pos + length > end:
                raise ValueError("truncated")
            yield number, data[pos : pos + length]
            pos += length
        else:
            raise ValueError(f"wire type {wire}")


def argument_bytes(method: str, raw: bytes) -> int:
    """Bytes of the JSON arguments (``call.args`` and ``call.kwargs``) of every job
    in a ``Run``/``SubmitJob``/``SubmitJobs`` request, read from its wire format
    without parsing it; 0 for other methods and for bytes that are not a valid
    message (the parser refuses those)."""
    job_field = _JOB_FIELD.get(method)
    if job_field is None or not raw:
        return 0
    total = 0
    try:
        for number, job in _fields(memoryview(raw)):
            if number != job_field:
                continue
            for number, call in _fields(job):
                if number != _CALL_FIELD:
                    continue
                for number, value in _fields(call):
                    if number in _ARGUMENT_FIELDS:
                        total += len(value)
    except (ValueError, IndexError):
        return 0
    return total


def _address_of(peer: str) -> str:
    """The address of a grpc peer string without its port (``ipv4:1.2.3.4:567`` -> ``ipv4:1.2.3.4``)."""
    if peer.startswith(("ipv4:", "ipv6:")):
        return peer.rsplit(":", 1)[0]
    return peer


def _service_of(method: str) -> str:
    return method.lstrip("/").split("/", 1)[0]


class CallerInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates every call to a non-open service and parses its request.

    Args:
        authenticator: Decides who the caller is (it may be reloaded while
            the server runs; each call asks it afresh).
        answers: How the service answers (the servicer's), so that refusals
            are answered and counted as its own errors are.
        max_argument_bytes: Most bytes of JSON arguments in one request
            (``--max-argument-bytes``); ``None`` means no bound.
    """

    def __init__(
        self,
        authenticator: Authenticator,
        answers: status.Answers | None = None,
        max_argument_bytes: int | None = None,
    ) -> None:
        self.authenticator = authenticator
        self.answers = answers
        self.max_argument_bytes = max_argument_bytes
        self.refusals = RefusalLog()
        # Each method's wrapped handler, made once (the servicer's handlers do not change).
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or _service_of(method) in OPEN_SERVICES:
            return handler
        known = self._wrapped.get(method)
        if known is None or known[0] is not handler:
            gate = _Gate(
                self.authenticator, method, self.answers, self.refusals, self.max_argument_bytes
            )
            known = self._wrapped[method] = (handler, _wrap(handler, gate))
        return known[1]


class _Gate:
    """What one method's wrapped handler checks before it runs the servicer's."""

    def __init__(
        self,
        authenticator: Authenticator,
        method: str,
        answers: status.Answers | None,
        refusals: RefusalLog,
        max_argument_bytes: int | None = None,
    ) -> None:
        self.authenticator = authenticator
        self.method = method
        self.name = method.rsplit("/", 1)[-1]  # as the servicer's metrics name it
        self.answers = answers
        self.refusals = refusals
        self.max_argument_bytes = max_argument_bytes if method in _JOB_FIELD else None

    def caller(self, context: grpc.aio.ServicerContext) -> Caller:
        """Who makes the call.

        Raises:
            Unauthenticated: No valid credential, or more than one.
        """
        authorization = None
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                if authorization is not None:
                    raise Unauthenticated(
                        "more than one authorization metadata entry", reason="MULTIPLE_CREDENTIALS"
                    )
                authorization = value if isinstance(value, str) else value.decode("latin-1")
        common_name = peer_common_name(context) if self.authenticator.mtls else None
        return self.authenticator.authenticate(authorization, common_name)

    def parse(self, deserializer: Callable[[bytes], Any] | None, raw: bytes) -> Any:
        """The request message in ``raw``.

        Raises:
            InvalidArgument: ``raw`` is not a valid message for the method.
        """
        if deserializer is None:
            return raw
        bound = self.max_argument_bytes
        if bound is not None and len(raw) > bound:
            size = argument_bytes(self.method, raw)
            if size > bound:
                raise InvalidArgument(
                    f"the JSON arguments of this request are {size:,} bytes; the server accepts "
                    f"at most {bound:,} (--max-argument-bytes): pass large data as an object "
                    f"(PutObject) and refer to it instead",
                    reason="ARGUMENT_BYTES_LIMIT",
                    metadata={"limit_name": "max_argument_bytes", "limit": bound, "bytes": size},
                )
        try:
            return deserializer(raw)
        except Exception as exc:  # DecodeError, or whatever a parser raises
            raise InvalidArgument(
                f"the request is not a valid message for {self.method}: {exc}",
                reason="MALFORMED_REQUEST",
            ) from exc

    async def refuse(
        self, context: grpc.aio.ServicerContext, exc: Exception, received: int = 0
    ) -> NoReturn:
        """Answer a refused call through the mapping (and the servicer's metrics).

        Raises:
            grpc.aio.AbortError: Always.
        """
        if isinstance(exc, ServiceError):
            # Logged without the credential, at INFO (a flood of bad calls must not
            # flood the log at a level operators alert on), and rate-limited per peer.
            self.refusals.refused(self.method, context.peer(), exc)
        if self.answers is not None:
            await self.answers.refuse(self.name, context, exc, received)
        await status.abort(context, status.status_of(exc, self.method))


async def _parsed_stream(
    deserializer: Callable[[bytes], Any] | None, requests: Any, method: str
) -> AsyncIterator[Any]:
    """The messages of a request stream, parsed here rather than by grpc.

    A message that does not parse raises :class:`server.errors.InvalidArgument`
    where the servicer reads it, and the servicer answers ``INVALID_ARGUMENT``
    (grpc would raise ``DecodeError`` there, answered ``INTERNAL``).
    """
    number = 0
    async for raw in requests:
        if deserializer is None:
            yield raw
            continue
        try:
            message = deserializer(raw)
        except Exception as exc:
            raise InvalidArgument(
                f"message {number} of the request stream is not valid for {method}: {exc}",
                reason="MALFORMED_REQUEST",
            ) from exc
        number += 1
        yield message


async def _result(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def _wrap(handler: grpc.RpcMethodHandler, gate: _Gate) -> grpc.RpcMethodHandler:
    serializer = handler.response_serializer
    deserializer = handler.request_deserializer
    method = gate.method
    # The handler's methods are the servicer's coroutines and async generators
    # (grpc.aio's), which types-grpcio types as the synchronous server's; and
    # the wrappers below stand in for them.
    Method = Callable[..., Any]

    async def admit(raw: bytes, context: grpc.aio.ServicerContext) -> tuple[Caller, Any]:
        status.RECEIVED_BYTES.set(len(raw))  # this call's task: the servicer reads it
        try:
            return gate.caller(context), gate.parse(deserializer, raw)
        except Exception as exc:
            await gate.refuse(context, exc, len(raw))

    async def admit_stream(context: grpc.aio.ServicerContext) -> Caller:
        try:
            return gate.caller(context)
        except Exception as exc:
            await gate.refuse(context, exc)

    if handler.unary_unary is not None:
        inner_uu: Method = handler.unary_unary

        async def unary_unary(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
            caller, request = await admit(raw, context)
            with caller_scope(caller):
                return await _result(inner_uu(request, context))

        return grpc.unary_unary_rpc_method_handler(unary_unary, None, serializer)

    if handler.stream_unary is not None:
        inner_su: Method = handler.stream_unary

        async def stream_unary(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            with caller_scope(await admit_stream(context)):
                parsed = _parsed_stream(deserializer, requests, method)
                return await _result(inner_su(parsed, context))

        return grpc.stream_unary_rpc_method_handler(stream_unary, None, serializer)

    # Streamed responses: the servicer method is an async generator, or a
    # coroutine that writes with context.write(); the wrapper is the same kind.
    if handler.unary_stream is not None:
        inner_us: Method = handler.unary_stream

        async def prepare_us(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
            caller, request = await admit(raw, context)
            set_caller(caller)
            return request

        unary_stream: Method
        if inspect.isasyncgenfunction(inner_us):

            async def unary_stream(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
                async for response in inner_us(await prepare_us(raw, context), context):
                    yield response

        else:

            async def unary_stream(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
                return await _result(inner_us(await prepare_us(raw, context), context))

        return grpc.unary_stream_rpc_method_handler(unary_stream, None, serializer)

    inner_ss = cast("Method", handler.stream_stream)  # the one kind left
    stream_stream: Method
    if inspect.isasyncgenfunction(inner_ss):

        async def stream_stream(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            set_caller(await admit_stream(context))
            parsed = _parsed_stream(deserializer, requests, method)
            async for response in inner_ss(parsed, context):
                yield response

    else:

        async def stream_stream(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            set_caller(await admit_stream(context))
            return await _result(inner_ss(_parsed_stream(deserializer, requests, method), context))

    return grpc.stream_stream_rpc_method_handler(stream_stream, None, serializer)
