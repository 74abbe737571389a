"""The data-plane floor: a bare ``grpc.aio`` streaming server, and a client to time it.

``python -m bench.stream`` serves two methods on a free port and prints
``stream serving on PORT``:

- ``/bench.Stream/Download`` (server streaming): the request is a byte count
  in ASCII digits; the answer is that many bytes in chunks of
  :data:`CHUNK_BYTES` (the service's default ``GetJobResult`` chunk), sent
  from one pre-built block, so the server does no work but the transport's
  (the client copies them into one buffer, as the SDK does);
- ``/bench.Stream/Upload`` (client streaming): counts the bytes of the chunks
  it receives and answers the count in ASCII digits.

It runs in its own process, as the service does, so that a transfer through
it and one through the service cross the same loopback between two processes.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Iterator

import grpc

logger = logging.getLogger(__name__)

#: The chunk size of both directions: the service's default result chunk and the SDK's upload chunk.
CHUNK_BYTES = 1024 * 1024
DOWNLOAD = "/bench.Stream/Download"
UPLOAD = "/bench.Stream/Upload"
#: The service's default message limit (``--max-message-bytes``).
_MAX_MESSAGE = 64 * 1024 * 1024
_OPTIONS = [
    ("grpc.max_receive_message_length", _MAX_MESSAGE),
    ("grpc.max_send_message_length", _MAX_MESSAGE),
]
_BLOCK = bytes(CHUNK_BYTES)


def _chunks(nbytes: int) -> Iterator[bytes]:
    # `nbytes` bytes as whole blocks, then the rest.
    full, rest = divmod(nbytes, CHUNK_BYTES)
    for _ in range(full):
        yield _BLOCK
    if rest:
        yield _BLOCK[:rest]


async def _download(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    for chunk in _chunks(int(request)):
        yield chunk


async def _upload(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
    received = 0
    async for chunk in requests:
        received += len(chunk)
    return str(received).encode()


async def serve() -> None:
    """Serve both methods until killed."""
    server = grpc.aio.server(options=_OPTIONS)
    handler = grpc.method_handlers_generic_handler(
        "bench.Stream",
        {
            "Download": grpc.unary_stream_rpc_method_handler(_download),
            "Upload": grpc.stream_unary_rpc_method_handler(_upload),
        },
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"stream serving on {port}", flush=True)
    await server.wait_for_termination()


class StreamClient:
    """A blocking client of the stream server, with a 300 s deadline per transfer."""

    def __init__(self, port: int) -> None:
        self._channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=_OPTIONS)
        self._download = self._channel.unary_stream(DOWNLOAD)
        self._upload = self._channel.stream_unary(UPLOAD)

    def download(self, nbytes: int) -> int:
        """Read ``nbytes`` from the server into one buffer; returns the bytes received.

        The buffer is allocated as the SDK allocates a result's
        (``client_sdk._results.new_buffer``), and each chunk is copied into
        it, as the SDK does: bytes that arrive are bytes kept.
        """
        from client_sdk._results import new_buffer

        buffer = memoryview(new_buffer(nbytes)).cast("B")
        received = 0
        for chunk in self._download(str(nbytes).encode(), timeout=300):
            end = received + len(chunk)
            if end <= nbytes:
                buffer[received:end] = chunk
            received = end
        return received

    def upload(self, nbytes: int) -> int:
        """Send ``nbytes`` to the server; returns the bytes it counted."""
        return int(self._upload(_chunks(nbytes), timeout=300))

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()


if __name__ == "__main__":
    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        sys.exit(0)
