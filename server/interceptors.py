"""The server interceptor that names the caller of every call and parses its request.

:class:`CallerInterceptor` wraps the handler of every method except those of
the health and reflection services (probes and ``grpcurl list`` need no
token). The wrapped handler runs in the call's own task, so

1. it authenticates the call (bearer token metadata, or the verified client
   certificate under mutual TLS) and answers ``UNAUTHENTICATED`` with what to
   send when that fails;
2. it parses the request itself, so that bytes that are not a valid message
   (corrupt, truncated, non-UTF-8 strings, nesting past protobuf's depth
   limit) answer ``INVALID_ARGUMENT`` rather than grpc's ``UNKNOWN`` (or, in
   a request stream, ``INTERNAL``) with a logged traceback. Streamed requests
   are parsed as the servicer iterates them, so a servicer method must read
   its request iterator, never ``context.read()`` (which would give bytes);
3. it runs the servicer method with the caller set (:func:`server.auth.caller_scope`,
   or :func:`server.auth.set_caller` for handlers that yield), where
   :func:`server.auth.current_caller` gives it.

Wrapping the handler, rather than setting the context variable in
``intercept_service``, keeps the caller bound to the task that runs the
method, whatever task runs the interceptor, and gives access to the call's
``auth_context()`` (the client certificate), which ``intercept_service`` does
not see.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from server.auth import Authenticator, Caller, caller_scope, set_caller
from server.errors import InvalidArgument, Unauthenticated
from server.servicer import ERROR_KEY
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


def _service_of(method: str) -> str:
    return method.lstrip("/").split("/", 1)[0]


class CallerInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates every call to a non-open service and parses its request.

    Args:
        authenticator: Decides who the caller is (it may be reloaded while
            the server runs; each call asks it afresh).
    """

    def __init__(self, authenticator: Authenticator) -> None:
        self.authenticator = authenticator
        # Each method's wrapped handler, made once (the servicer's handlers do not change).
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or _service_of(method) in OPEN_SERVICES:
            return handler
        known = self._wrapped.get(method)
        if known is None or known[0] is not handler:
            known = self._wrapped[method] = (handler, _wrap(handler, method, self._authenticate))
        return known[1]

    async def _authenticate(self, context: grpc.aio.ServicerContext, method: str) -> Caller:
        authorization = None
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                if authorization is not None:
                    await _abort_unauthenticated(
                        context, method, "more than one authorization metadata entry"
                    )
                authorization = value if isinstance(value, str) else value.decode("latin-1")
        common_name = peer_common_name(context) if self.authenticator.mtls else None
        try:
            return self.authenticator.authenticate(authorization, common_name)
        except Unauthenticated as exc:
            await _abort_unauthenticated(context, method, str(exc))
            raise  # not reached: abort raises


async def _abort_unauthenticated(
    context: grpc.aio.ServicerContext, method: str, message: str
) -> None:
    # Logged without the credential, at INFO: a flood of bad calls must not
    # flood the log at a level operators alert on.
    logger.info("refused %s from %s: %s", method, context.peer(), message)
    await context.abort(
        grpc.StatusCode.UNAUTHENTICATED,
        message,
        trailing_metadata=((ERROR_KEY, Unauthenticated.__name__),),
    )


async def _parse(
    deserializer: Callable[[bytes], Any] | None,
    raw: bytes,
    context: grpc.aio.ServicerContext,
    method: str,
) -> Any:
    if deserializer is None:
        return raw
    try:
        return deserializer(raw)
    except Exception as exc:  # noqa: BLE001  (DecodeError, or whatever a parser raises)
        logger.info("refused %s from %s: unparsable request (%s)", method, context.peer(), exc)
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"the request is not a valid message for {method}: {exc}",
            trailing_metadata=((ERROR_KEY, "InvalidArgument"),),
        )


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
                f"message {number} of the request stream is not valid for {method}: {exc}"
            ) from exc
        number += 1
        yield message


async def _result(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def _wrap(
    handler: grpc.RpcMethodHandler,
    method: str,
    authenticate: Callable[[grpc.aio.ServicerContext, str], Awaitable[Caller]],
) -> grpc.RpcMethodHandler:
    serializer = handler.response_serializer
    deserializer = handler.request_deserializer

    if handler.unary_unary is not None:
        inner_uu = handler.unary_unary

        async def unary_unary(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
            caller = await authenticate(context, method)
            request = await _parse(deserializer, raw, context, method)
            with caller_scope(caller):
                return await _result(inner_uu(request, context))

        return grpc.unary_unary_rpc_method_handler(unary_unary, None, serializer)

    if handler.stream_unary is not None:
        inner_su = handler.stream_unary

        async def stream_unary(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            with caller_scope(await authenticate(context, method)):
                parsed = _parsed_stream(deserializer, requests, method)
                return await _result(inner_su(parsed, context))

        return grpc.stream_unary_rpc_method_handler(stream_unary, None, serializer)

    # Streamed responses: the servicer method is an async generator, or a
    # coroutine that writes with context.write(); the wrapper is the same kind.
    if handler.unary_stream is not None:
        inner_us = handler.unary_stream

        async def prepare_us(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
            caller = await authenticate(context, method)
            request = await _parse(deserializer, raw, context, method)
            set_caller(caller)
            return request

        if inspect.isasyncgenfunction(inner_us):

            async def unary_stream(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
                async for response in inner_us(await prepare_us(raw, context), context):
                    yield response

        else:

            async def unary_stream(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
                return await _result(inner_us(await prepare_us(raw, context), context))

        return grpc.unary_stream_rpc_method_handler(unary_stream, None, serializer)

    inner_ss = handler.stream_stream
    if inspect.isasyncgenfunction(inner_ss):

        async def stream_stream(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            set_caller(await authenticate(context, method))
            parsed = _parsed_stream(deserializer, requests, method)
            async for response in inner_ss(parsed, context):
                yield response

    else:

        async def stream_stream(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            set_caller(await authenticate(context, method))
            return await _result(inner_ss(_parsed_stream(deserializer, requests, method), context))

    return grpc.stream_stream_rpc_method_handler(stream_stream, None, serializer)
