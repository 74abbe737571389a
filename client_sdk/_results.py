"""Reassembling a result that the server streams (``GetJobResult``).

Results larger than the server's inline limit do not come inside Run and
WaitJob answers: they are marked ``streamed`` and read as a stream of a header
(format, total size, segment sizes) and chunks, then a trailer with the
SHA-256 of the whole stream (asked for with ``checksum_last``, so the server
sends the first bytes before it has hashed them all; older servers put the
SHA-256 in the header instead). A stream cut off halfway, even just before its
trailer, is resumed from the last byte received. The bytes land in one
preallocated buffer, so a result costs its size once; a pickle's out-of-band
buffers (NumPy data) are handed to ``pickle.loads`` without a copy.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from typing import Any

from client_sdk import _pickle
from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk.errors import ComputeError

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class StreamedResult:
    """Stands for a finished job's result that is still on the server, too large to come inline.

    A job's future holds it until the value is asked for, then downloads it.
    """

    job_id: str
    size_bytes: int


class ResultAssembler:
    """Collects the messages of one or more ``GetJobResult`` streams of one result.

    Feed it every message (:meth:`feed` never raises); ask the next stream to
    start at :attr:`received`; call :meth:`value` once :attr:`complete`.

    Each chunk is copied once, into the buffer the header sized, and hashed
    as it arrives, so the SHA-256 check at the end has nothing left to read.
    The SHA-256 to match is the header's, or when the header has none
    (``checksum_last``), the trailer's that ends the last stream.
    """

    def __init__(self) -> None:
        self.header: pb.ResultHeader | None = None
        self.buffer = bytearray()
        self.received = 0
        #: Set when a resumed stream describes other bytes than the first did
        #: (the server encoded the result afresh), or ends with a trailer that
        #: the bytes of all its streams do not match: start again from 0.
        self.restart = False
        #: The SHA-256 the trailer of the last stream brought ("" until one came).
        self.trailer_sha256 = ""
        # The SHA-256 of buffer[:received] while the bytes arrive in order;
        # None once they did not (then value() hashes the buffer).
        self._digest: Any = None
        # Streams begun (headers taken) since the last reset.
        self._streams = 0
        # Restarts a trailer asked for: only one per fetch (see feed()).
        self._trailer_restarts = 0

    def feed(self, message: pb.GetJobResultResponse) -> None:
        """Take one message of a stream."""
        part = message.WhichOneof("part")
        if part == "header":
            header = message.header
            if self.header is not None and _other_bytes(header, self.header):
                self.restart = True
                return
            if self.header is None:
                self.header = header
                self.buffer = bytearray(header.total_size)
                self._digest = hashlib.sha256()
            if header.offset != self.received:
                self._digest = None
            self.received = header.offset
            self.trailer_sha256 = ""  # a trailer belongs to the stream it ends
            self._streams += 1
        elif part == "trailer" and not self.restart and self.header is not None:
            self.trailer_sha256 = message.trailer.sha256
            # Bytes from more than one stream that do not match: the server
            # may have encoded the result afresh between them (a header
            # without a SHA-256 cannot tell), so start again from 0, once;
            # a single stream that does not match is corrupt (value() says so).
            if (
                self._streams > 1
                and self._trailer_restarts == 0
                and self.received == self.header.total_size
                and self._hexdigest() != self.trailer_sha256
            ):
                self.restart = True
                self._trailer_restarts += 1
        elif part == "chunk" and not self.restart and self.header is not None:
            chunk = message.chunk  # read once: each read of a bytes field copies it
            end = self.received + len(chunk)
            if end <= len(self.buffer):
                self.buffer[self.received : end] = chunk
                if self._digest is not None:
                    self._digest.update(chunk)
            else:  # more bytes than the header announced: value() refuses them
                self._digest = None
            self.received = end

    def reset(self) -> None:
        """Forget what was received, to start again from offset 0."""
        trailer_restarts = self._trailer_restarts
        self.__init__()  # type: ignore[misc]
        self._trailer_restarts = trailer_restarts

    @property
    def complete(self) -> bool:
        """Whether every byte of the result, and its SHA-256, has arrived.

        More bytes than announced also complete it (:meth:`value` refuses them).
        """
        header = self.header
        if header is None or self.restart:
            return False
        if self.received > header.total_size:
            return True
        return self.received == header.total_size and bool(header.sha256 or self.trailer_sha256)

    def value(self) -> Any:
        """The result's value.

        Raises:
            ComputeError: The bytes do not match the SHA-256 of the header or
                trailer, the stream ended without one, or the bytes are in a
                form this client does not read.
        """
        header = self.header
        assert header is not None and self.received >= header.total_size
        view = memoryview(self.buffer)
        if self.received != header.total_size:
            raise ComputeError(
                f"the streamed result has {self.received} bytes, not {header.total_size} as "
                "announced: it was corrupted"
            )
        expected = header.sha256 or self.trailer_sha256
        if not expected:
            raise ComputeError(
                "the streamed result ended without its SHA-256 (no trailer came): "
                "it cannot be checked"
            )
        if self._hexdigest() != expected:
            raise ComputeError("the streamed result does not match its SHA-256: it was corrupted")
        if header.format == pb.RESULT_FORMAT_JSON:
            return json.loads(self.buffer)
        if header.format != pb.RESULT_FORMAT_PICKLE:
            name = pb.ResultFormat.Name(header.format)
            raise ComputeError(f"the result came as {name}, which this client does not read")
        segments, start = [], 0
        for size in header.segment_sizes or [header.total_size]:
            segments.append(view[start : start + size])
            start += size
        return _pickle.loads(segments[0], buffers=segments[1:])

    def _hexdigest(self) -> str:
        """The SHA-256 of the bytes received, hashed as they came when they came in order."""
        digest = self._digest or hashlib.sha256(memoryview(self.buffer)[: self.received])
        return digest.hexdigest()


def _other_bytes(header: pb.ResultHeader, first: pb.ResultHeader) -> bool:
    """Whether a resumed stream's header describes other bytes than the first stream's."""
    return (
        header.sha256 != first.sha256
        or header.format != first.format
        or header.total_size != first.total_size
        or list(header.segment_sizes) != list(first.segment_sizes)
    )
