"""The transport floor: a bare ``grpc.aio`` unary echo server, and a client to time it.

``python -m bench.echo`` serves ``/bench.Echo/Echo`` (bytes in, same bytes out)
on a free port with the service's message limits and prints
``echo serving on PORT``. It runs in its own process, as the service does, so
the two round trips are comparable.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import grpc

logger = logging.getLogger(__name__)

METHOD = "/bench.Echo/Echo"


async def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


async def serve() -> None:
    """Serve the echo method until killed."""
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 * 2**20)])
    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"echo serving on {port}", flush=True)
    await server.wait_for_termination()


class EchoClient:
    """A blocking client of the echo server, with a 30 s deadline per call."""

    def __init__(self, port: int) -> None:
        self._channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self._call = self._channel.unary_unary(METHOD)

    def echo(self, payload: bytes = b"ping") -> bytes:
        """One round trip."""
        return self._call(payload, timeout=30)

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()


if __name__ == "__main__":
    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        sys.exit(0)
