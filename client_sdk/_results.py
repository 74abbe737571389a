"""Reassembling a result that the server streams (``GetJobResult``).

Results larger than the server's inline limit do not come inside Run and
WaitJob answers: they are marked ``streamed`` and read as a stream of a header
(format, total size, segment sizes) and chunks, then a trailer with the
SHA-256 of the whole stream (asked for with ``checksum_last``, so the server
sends the first bytes before it has hashed them all; older servers put the
SHA-256 in the header instead). A stream cut off halfway, even just before its
trailer, is resumed from the last byte received. The bytes land in one
preallocated buffer, so a result costs its size once; a pickle's out-of-band
buffers (NumPy data) are handed to ``pickle.loads`` without a copy. They are
hashed in a thread while the next chunks arrive.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import mmap
from typing import Any, cast

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
    there as it arrives (by a :class:`RunningHash`), so the SHA-256 check at
    the end has at most the last few MiB left to read.
    The SHA-256 to match is the header's, or when the header has none
    (``checksum_last``), the trailer's that ends the last stream.
    """

    def __init__(self) -> None:
        self.header: pb.ResultHeader | None = None
        #: The result's bytes: a bytearray, or for a large result an anonymous
        #: memory map (see :func:`new_buffer`).
        self.buffer: bytearray | mmap.mmap = bytearray()
        self.received = 0
        #: Set when a resumed stream describes other bytes than the first did
        #: (the server encoded the result afresh), or ends with a trailer that
        #: the bytes of all its streams do not match: start again from 0.
        self.restart = False
        #: The SHA-256 the trailer of the last stream brought ("" until one came).
        self.trailer_sha256 = ""
        # The SHA-256 of buffer[:received] while the bytes arrive in order;
        # None once they did not (then value() hashes the buffer).
        self._digest: RunningHash | None = None
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
                self.buffer = new_buffer(header.total_size, header.format)
                self._digest = RunningHash(self.buffer)
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
                    self._digest.extend(len(chunk))
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
            return json.loads(cast(bytearray, self.buffer))  # a bytearray: see new_buffer()
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
        if self._digest is not None:
            return self._digest.hexdigest()
        return hashlib.sha256(memoryview(self.buffer)[: self.received]).hexdigest()


#: Bytes a :class:`RunningHash` lets gather before its thread hashes them.
HASH_BATCH = 4 * 1024 * 1024


class RunningHash:
    """The SHA-256 of a buffer's first bytes, hashed by a thread of its own as they land.

    :meth:`extend` says that the bytes after those already counted hold
    ``nbytes`` more of the data; once :data:`HASH_BATCH` bytes wait, a
    thread hashes them in the buffer itself (hashlib lets go of the GIL
    while it reads them, so the thread that receives the next chunks goes
    on). Only the bytes after those counted may change afterwards.
    :meth:`hexdigest` hashes what is left and waits for the thread. A
    result smaller than one batch is hashed in the caller's thread, at the
    end, and starts no thread.
    """

    def __init__(self, buffer: Any) -> None:
        self._view = memoryview(buffer).cast("B")
        self._digest = hashlib.sha256()
        self._counted = 0  # bytes of data in the buffer
        self._handed = 0  # of which were handed to the thread (or hashed)
        self._thread: concurrent.futures.ThreadPoolExecutor | None = None
        self._last: concurrent.futures.Future[Any] | None = None

    def extend(self, nbytes: int) -> None:
        """Count ``nbytes`` more bytes of data, right after those counted before."""
        self._counted += nbytes
        if self._counted - self._handed >= HASH_BATCH:
            self._hand_over()

    def hexdigest(self) -> str:
        """The SHA-256, in hex, of every byte counted so far."""
        if self._thread is None:
            self._digest.update(self._view[self._handed : self._counted])
            self._handed = self._counted
        else:
            if self._counted > self._handed:
                self._hand_over()
            assert self._last is not None
            self._last.result()
        return self._digest.hexdigest()

    def _hand_over(self) -> None:
        piece = self._view[self._handed : self._counted]
        self._handed = self._counted
        if self._thread is None:
            # One thread, so the pieces are hashed in order; it ends once
            # this object is dropped.
            self._thread = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix="dask-compute-hash"
            )
        self._last = self._thread.submit(self._digest.update, piece)


#: Results from this size on land in an anonymous memory map rather than a bytearray.
MAP_FROM_BYTES = 4 * 1024 * 1024


def new_buffer(size: int, fmt: int = pb.RESULT_FORMAT_PICKLE) -> bytearray | mmap.mmap:
    """A writable buffer of ``size`` bytes for a result of format ``fmt``.

    ``bytearray(size)`` writes zeros over every page before the first chunk
    comes (a quarter of a second for 256 MiB, most of it the kernel's page
    faults), and the chunks then write every page again. From
    :data:`MAP_FROM_BYTES` on, a pickle's or Arrow stream's bytes go instead
    to a private anonymous map, whose pages the kernel supplies zeroed as
    the chunks first touch them. (Not as huge pages: asking for them with
    ``MADV_HUGEPAGE`` made the kernel compact memory first, and a 256 MiB
    result arrived at 0.31x the bare stream's speed instead of 0.53x.) The
    NumPy arrays that ``pickle.loads`` builds on its buffers keep the map
    alive. JSON, which ``json.loads`` reads from bytes-like objects but not
    from a map, and platforms without private maps keep the bytearray.
    """
    private = getattr(mmap, "MAP_PRIVATE", None)
    if size < MAP_FROM_BYTES or fmt == pb.RESULT_FORMAT_JSON or private is None:
        return bytearray(size)
    return mmap.mmap(-1, size, flags=private | mmap.MAP_ANONYMOUS)


def _other_bytes(header: pb.ResultHeader, first: pb.ResultHeader) -> bool:
    """Whether a resumed stream's header describes other bytes than the first stream's."""
    return (
        header.sha256 != first.sha256
        or header.format != first.format
        or header.total_size != first.total_size
        or list(header.segment_sizes) != list(first.segment_sizes)
    )
