"""The caller interceptor on a small in-process grpc.aio server, for every kind of handler.

The compute service has unary and server-streaming methods; these generic
handlers cover all four kinds, both ways of streaming a response (yield, or
``context.write``), the open services, and requests that do not parse.
"""

from __future__ import annotations

import grpc
import pytest
import pytest_asyncio

from server.auth import Authenticator, current_caller, parse_identities
from server.errors import InvalidArgument
from server.interceptors import CallerInterceptor

TOKEN = "alice-token-0123456789"
AUTH = (("authorization", f"Bearer {TOKEN}"),)

pytestmark = pytest.mark.asyncio


def _parse(data: bytes) -> bytes:
    if data == b"bad":
        raise ValueError("not a valid request")
    return data


def _name() -> bytes:
    return current_caller().name.encode()


async def who(request, context):
    return _name()


async def who_stream(request, context):
    yield _name()
    yield _name()


async def who_write(request, context):
    await context.write(_name())


async def who_client_stream(requests, context):
    async for _ in requests:
        pass
    return _name()


async def count_valid(requests, context):
    # What a servicer sees when a streamed message does not parse.
    seen = []
    try:
        async for message in requests:
            seen.append(message)
    except InvalidArgument as exc:
        return b"invalid after %d: %s" % (len(seen), str(exc).encode())
    return b"%d valid" % len(seen)


async def who_bidi(requests, context):
    async for _ in requests:
        yield _name()


def _handlers():
    identity = {"request_deserializer": _parse, "response_serializer": None}
    return [
        grpc.method_handlers_generic_handler(
            "test.Who",
            {
                "Unary": grpc.unary_unary_rpc_method_handler(who, **identity),
                "Stream": grpc.unary_stream_rpc_method_handler(who_stream, **identity),
                "Write": grpc.unary_stream_rpc_method_handler(who_write, **identity),
                "ClientStream": grpc.stream_unary_rpc_method_handler(who_client_stream, **identity),
                "Bidi": grpc.stream_stream_rpc_method_handler(who_bidi, **identity),
                "Count": grpc.stream_unary_rpc_method_handler(count_valid, **identity),
            },
        ),
        grpc.method_handlers_generic_handler(
            "grpc.health.v1.Health",
            {
                "Check": grpc.unary_unary_rpc_method_handler(who, **identity),
            },
        ),
    ]


@pytest_asyncio.fixture
async def channel():
    authenticator = Authenticator(parse_identities(f"alice run {TOKEN}", "test"))
    server = grpc.aio.server(interceptors=[CallerInterceptor(authenticator)])
    server.add_generic_rpc_handlers(_handlers())
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        yield ch
    await server.stop(None)


async def test_every_kind_of_handler_sees_the_caller(channel):
    assert await channel.unary_unary("/test.Who/Unary")(b"x", metadata=AUTH, timeout=10) == b"alice"
    stream = channel.unary_stream("/test.Who/Stream")(b"x", metadata=AUTH, timeout=10)
    assert [m async for m in stream] == [b"alice", b"alice"]
    written = channel.unary_stream("/test.Who/Write")(b"x", metadata=AUTH, timeout=10)
    assert [m async for m in written] == [b"alice"]
    client_stream = channel.stream_unary("/test.Who/ClientStream")
    assert await client_stream(iter([b"a", b"b"]), metadata=AUTH, timeout=10) == b"alice"
    bidi = channel.stream_stream("/test.Who/Bidi")(iter([b"a", b"b"]), metadata=AUTH, timeout=10)
    assert [m async for m in bidi] == [b"alice", b"alice"]


@pytest.mark.parametrize("method", ["Unary", "Stream", "Write", "ClientStream", "Bidi"])
async def test_every_kind_of_handler_refuses_a_missing_token(channel, method):
    kind = {
        "Unary": "unary_unary",
        "Stream": "unary_stream",
        "Write": "unary_stream",
        "ClientStream": "stream_unary",
        "Bidi": "stream_stream",
    }[method]
    call = getattr(channel, kind)(f"/test.Who/{method}")
    # No request messages on streams: a client still writing when the server
    # refuses may see its own write fail (INTERNAL, "execute_batch") first.
    request = iter([]) if kind.startswith("stream") else b"x"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        result = call(request, timeout=10)
        if kind.endswith("stream"):
            [m async for m in result]
        else:
            await result
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_open_services_need_no_token_and_are_not_wrapped(channel):
    assert (
        await channel.unary_unary("/grpc.health.v1.Health/Check")(b"x", timeout=10) == b"anonymous"
    )


async def test_an_unparsable_request_is_invalid_argument_after_authentication(channel):
    call = channel.unary_unary("/test.Who/Unary")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(b"bad", timeout=10)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, "credentials are checked first"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(b"bad", metadata=AUTH, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (
        "the request is not a valid message for /test.Who/Unary: not a valid request"
        in info.value.details()
    )


async def test_streamed_messages_are_parsed_as_the_handler_reads_them(channel):
    call = channel.stream_unary("/test.Who/Count")
    assert await call(iter([b"a", b"b"]), metadata=AUTH, timeout=10) == b"2 valid"
    answer = await call(iter([b"a", b"bad"]), metadata=AUTH, timeout=10)
    assert (
        answer
        == b"invalid after 1: message 1 of the request stream is not valid for /test.Who/Count: not a valid request"
    )


async def test_two_authorization_entries_are_refused(channel):
    call = channel.unary_unary("/test.Who/Unary")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(
            b"x", metadata=(*AUTH, ("authorization", "Bearer other-token-0123456789")), timeout=10
        )
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "more than one authorization" in info.value.details()


async def test_unknown_methods_stay_unimplemented(channel):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await channel.unary_unary("/test.Who/Nope")(b"x", metadata=AUTH, timeout=10)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


class _Broken(Authenticator):
    def authenticate(self, authorization, common_name=None):
        raise KeyError("secret-detail")


async def test_an_unexpected_error_while_admitting_a_call_goes_through_the_one_mapping():
    server = grpc.aio.server(interceptors=[CallerInterceptor(_Broken(None))])
    server.add_generic_rpc_handlers(_handlers())
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await ch.unary_unary("/test.Who/Unary")(b"x", metadata=AUTH, timeout=10)
    finally:
        await server.stop(None)
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert "secret-detail" not in info.value.details()
    assert info.value.details().startswith("internal error in /test.Who/Unary (incident ")
