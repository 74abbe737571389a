"""A large result streamed straight from the Dask worker that holds it, a piece at a time.

The usual way (:func:`server.execution.fetch_many`, then
:func:`server.results.encode_stream`) moves the whole value here before its
first byte goes out, and hashes it here while it goes. For a result held by
one future, of the pickle format, :func:`open_on_worker` instead has the
worker that holds it

1. encode it (pickle protocol 5: NumPy data stays out of band, so the
   segments are the array's own memory) and start hashing the segments in a
   thread of its own;
2. answer :data:`PIECE_BYTES` pieces of the segments as the server asks,
   while the server sends the pieces before to the caller (a few pieces
   ahead, so the worker-to-server and server-to-caller transfers overlap);
3. answer the SHA-256 once its thread is done.

So the SHA-256 is of the bytes as the worker encoded them, the server never
holds more than a few pieces, and no CPU of the server goes to hashing.

The calls go to the worker's ``run`` handler (what ``Client.run`` uses)
over the server's own connections to the worker, not through the scheduler,
and run in the worker's event loop, never in its task threads: a worker busy
with tasks still answers. The worker's functions are made here, by
:func:`worker_calls`, so that cloudpickle sends them by value: the workers of
an existing cluster need not have this package installed. The worker keeps a
stream's encoding until the server drops it, or :data:`WORKER_TTL` seconds
after the server last asked for a piece.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from server import results
from server.errors import Unavailable

logger = logging.getLogger(__name__)

#: The bytes of one piece the server asks the worker for.
PIECE_BYTES = 16 * 1024 * 1024
#: Pieces asked for ahead of the one being sent.
PIECES_AHEAD = 2
#: Results of at most this many bytes come whole with the worker's first answer.
WHOLE_BYTES = 4 * 1024 * 1024
#: Seconds a worker keeps a stream's encoding after the server last used it.
WORKER_TTL = 300.0
#: Seconds one call to the worker may take before the stream is given up.
CALL_TIMEOUT = 120.0


class WorkerCallFailed(Exception):
    """A call to the worker holding a result failed, or the worker answered an error."""


def worker_calls() -> dict[str, Callable[..., Any]]:
    """The functions the worker runs, by name: ``open``, ``read``, ``digest`` and ``drop``.

    Made here so that cloudpickle sends them by value. Each is a coroutine
    function taking ``dask_worker`` (the ``run`` handler passes the worker).
    """

    def streams(worker: Any) -> dict[str, Any]:
        found = getattr(worker, "_dask_compute_streams", None)
        if found is None:
            found = {}
            worker._dask_compute_streams = found
        return found

    def keep(worker: Any, token: str, ttl: float) -> Any:
        # The stream's state, kept for `ttl` seconds more.
        import asyncio

        held = streams(worker)
        state = held[token]  # KeyError: dropped, or expired
        if state["expiry"] is not None:
            state["expiry"].cancel()
        loop = asyncio.get_running_loop()
        state["expiry"] = loop.call_later(ttl, held.pop, token, None)
        return state

    async def open_stream(
        key: Any, token: str, whole_bytes: int, ttl: float, dask_worker: Any = None
    ) -> dict[str, Any]:
        import asyncio
        import hashlib
        import pickle

        import cloudpickle

        value = dask_worker.data[key]  # KeyError: not held here (any more)

        def encode() -> list[memoryview]:
            buffers: list[pickle.PickleBuffer] = []
            main = cloudpickle.dumps(value, protocol=5, buffer_callback=buffers.append)
            segments = [memoryview(main)]
            for buffer in buffers:
                try:
                    segments.append(buffer.raw())
                except BufferError:  # not contiguous: copy this one
                    segments.append(memoryview(bytes(buffer)))
            return segments

        def sha256() -> str:
            digest = hashlib.sha256()
            for segment in segments:
                digest.update(segment)  # hashlib lets go of the GIL for large buffers
            return digest.hexdigest()

        loop = asyncio.get_running_loop()
        segments = await loop.run_in_executor(None, encode)
        sizes = [segment.nbytes for segment in segments]
        if sum(sizes) <= whole_bytes:
            return {"sizes": sizes, "sha256": sha256(), "segments": [bytes(s) for s in segments]}
        streams(dask_worker)[token] = {
            "segments": segments,
            "sha256": loop.run_in_executor(None, sha256),
            "expiry": None,
        }
        keep(dask_worker, token, ttl)
        return {"sizes": sizes, "sha256": "", "segments": None}

    async def read(
        token: str, index: int, start: int, stop: int, ttl: float, dask_worker: Any = None
    ) -> memoryview:
        return keep(dask_worker, token, ttl)["segments"][index][start:stop]

    async def digest(token: str, ttl: float, dask_worker: Any = None) -> str:
        import asyncio

        return await asyncio.shield(keep(dask_worker, token, ttl)["sha256"])

    async def drop(token: str, dask_worker: Any = None) -> bool:
        state = streams(dask_worker).pop(token, None)
        if state is not None and state["expiry"] is not None:
            state["expiry"].cancel()
        return state is not None

    return {"open": open_stream, "read": read, "digest": digest, "drop": drop}


class _Worker:
    """Calls to the ``run`` handler of one worker, straight over the client's connections."""

    def __init__(self, client: Any, address: str) -> None:
        from distributed.protocol.pickle import dumps

        self._client = client
        self.address = address
        self._dumps = dumps
        self._functions = {name: dumps(f) for name, f in worker_calls().items()}

    async def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Run the worker's function ``name``; its value, or :class:`WorkerCallFailed`."""
        try:
            answer = await asyncio.wait_for(
                self._client.rpc(self.address).run(
                    function=self._functions[name],
                    args=self._dumps(args),
                    kwargs=self._dumps(kwargs),
                    wait=True,
                ),
                CALL_TIMEOUT,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the connection, or a timeout
            raise WorkerCallFailed(f"{name} on {self.address}: {exc!r}") from exc
        if not isinstance(answer, dict) or answer.get("status") != "OK":
            text = answer.get("exception_text", "") if isinstance(answer, dict) else answer
            raise WorkerCallFailed(f"{name} on {self.address} failed: {text!s:.500}")
        return answer["result"]


class WorkerStream:
    """A result encoded by the worker that holds it, read from there as it is sent.

    It offers what :class:`server.results.ResultStream` offers the servicer
    (``format``, ``segment_sizes``, ``total_size``, ``sha256``,
    :meth:`achunks`, :meth:`digest`, :meth:`closer`); its format is always
    "pickle".
    """

    format = "pickle"

    def __init__(
        self, worker: _Worker, token: str, sizes: list[int], sha256: str, segments: list | None
    ) -> None:
        self._worker = worker
        self._token = token
        self.segment_sizes = list(sizes)
        self.sha256 = sha256
        # The segments themselves, when the worker answered them whole.
        self._segments = segments
        # Calls for the pieces after the one being sent.
        self._ahead: collections.deque[asyncio.Future] = collections.deque()

    @property
    def total_size(self) -> int:
        """Bytes in all segments."""
        return sum(self.segment_sizes)

    @property
    def worker(self) -> str:
        """The address of the worker that encoded it."""
        return self._worker.address

    async def digest(self) -> str:
        """The SHA-256 of the whole stream, in hex, as the worker computed it."""
        if not self.sha256:
            try:
                self.sha256 = await self._worker.call("digest", self._token, WORKER_TTL)
            except WorkerCallFailed as exc:
                raise _gone(exc) from exc
        return self.sha256

    def pieces(self, offset: int, piece_bytes: int) -> list[tuple[int, int, int]]:
        """``(segment, start, stop)`` of the pieces from ``offset`` on, none across two segments."""
        return list(results.spans(self.segment_sizes, offset, piece_bytes))

    async def achunks(self, offset: int, size: int) -> AsyncIterator[memoryview]:
        """Slices of at most ``size`` bytes of the stream from ``offset`` on.

        Pieces are asked for :data:`PIECES_AHEAD` ahead of the one being
        sliced, so the next ones travel while this one goes out.

        Raises:
            Unavailable: The worker went away, or forgot the stream: the
                caller may ask again from the bytes it has.
        """
        # Pieces a whole number of chunks long, so that chunks are full but
        # at the end of a segment.
        piece_bytes = max(PIECE_BYTES // size, 1) * size
        plan = collections.deque(self.pieces(offset, piece_bytes))
        ahead = self._ahead
        try:
            while plan or ahead:
                while plan and len(ahead) <= PIECES_AHEAD:
                    ahead.append(asyncio.ensure_future(self._piece(*plan.popleft())))
                piece = memoryview(await ahead.popleft()).cast("B")
                for start in range(0, piece.nbytes, size):
                    yield piece[start : start + size]
                del piece
        finally:
            _cancel(ahead)

    async def _piece(self, index: int, start: int, stop: int) -> Any:
        if self._segments is not None:
            return memoryview(self._segments[index])[start:stop]
        try:
            return await self._worker.call("read", self._token, index, start, stop, WORKER_TTL)
        except WorkerCallFailed as exc:
            raise _gone(exc) from exc

    def closer(self) -> Callable[[], None]:
        """What to call once the stream is sent or given up; it holds none of the stream's bytes.

        It cancels the calls for pieces not sent yet, and has the worker
        drop the stream (in the background).
        """
        if self._segments is not None:
            return results.nothing
        worker, token, ahead = self._worker, self._token, self._ahead

        def close() -> None:
            _cancel(ahead)
            _background(worker.call("drop", token))

        return close


def _gone(exc: Exception) -> Unavailable:
    return Unavailable(
        f"the worker holding the result stopped answering ({exc}); ask again from the "
        "last byte received",
        reason="RESULT_WORKER_LOST",
    )


def _cancel(calls: collections.deque[asyncio.Future]) -> None:
    """Cancel the calls, and take the errors of those that failed (nobody reads them)."""
    while calls:
        call = calls.popleft()
        if call.done():
            if not call.cancelled():
                call.exception()
        else:
            call.cancel()


_dropping: set[asyncio.Task] = set()


def _background(call: Any) -> None:
    # Runs a worker call nobody waits for; a failure is only logged (the
    # worker forgets the stream after WORKER_TTL anyway).
    async def run() -> None:
        try:
            await call
        except Exception as exc:
            logger.debug("dropping a result stream on its worker failed: %s", exc)

    task = asyncio.ensure_future(run())
    _dropping.add(task)
    task.add_done_callback(_dropping.discard)


async def open_on_worker(client: Any, key: Any) -> WorkerStream | None:
    """The pickle stream of the value of ``key``, encoded by a worker that holds it.

    Returns ``None`` when no worker can do it (none holds the key, or the
    first call to it failed: a cluster that cannot run the calls, say): then
    the caller fetches the value as usual.
    """
    try:
        holders = await asyncio.wait_for(client.scheduler.who_has(keys=[key]), CALL_TIMEOUT)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        logger.debug("who_has(%s) failed: %s", key, exc)
        return None
    addresses = list((holders or {}).get(key) or ())
    if not addresses:
        return None
    worker = _Worker(client, addresses[0])
    token = uuid.uuid4().hex
    try:
        opened = await worker.call("open", key, token, WHOLE_BYTES, WORKER_TTL)
    except WorkerCallFailed as exc:
        logger.info("result %s not encoded on its worker, fetched instead: %s", key, exc)
        return None
    return WorkerStream(worker, token, opened["sizes"], opened["sha256"], opened["segments"])
