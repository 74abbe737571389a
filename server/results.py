"""Encoding a job's result as JSON or cloudpickle bytes."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import math
import pickle
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

from server import _pickle
from server.errors import FailedPrecondition

FORMATS = ("auto", "json", "pickle", "arrow")

#: Results smaller than this are pickled on the event loop; larger ones in a thread.
INLINE_PICKLE_LIMIT = 64 * 1024
_MAX_DEPTH = 64


class NotJSON(TypeError):
    """A value has no JSON form."""


@dataclasses.dataclass(frozen=True)
class EncodedResult:
    """A result ready to send: a JSON-compatible value or pickle bytes.

    ``streamed`` marks a result too large to send inline: only its size is
    set, and the caller reads it with GetJobResult.
    """

    format: str
    json: Any = None
    pickle: bytes = b""
    arrow: bytes = b""
    size_bytes: int = 0
    streamed: bool = False


@dataclasses.dataclass(frozen=True)
class ResultStream:
    """A result encoded for streaming, as segments sent back to back.

    For pickle, the first segment is the pickle and the others its
    out-of-band buffers (pickle protocol 5: NumPy and Arrow data are not
    copied into the pickle); ``pickle.loads(first, buffers=others)`` rebuilds
    it. For JSON, the one segment is UTF-8 JSON text.

    ``sha256`` is empty when the stream was built without it: then
    :meth:`compute_sha256` computes it, in a thread, while the chunks go out.
    """

    format: str
    segments: tuple[memoryview, ...]
    sha256: str = ""

    @property
    def total_size(self) -> int:
        """Bytes in all segments."""
        return sum(s.nbytes for s in self.segments)

    @property
    def segment_sizes(self) -> list[int]:
        """The size of each segment, in order."""
        return [s.nbytes for s in self.segments]

    def compute_sha256(self) -> str:
        """The SHA-256 of the whole stream, in hex, hashed now.

        hashlib releases the GIL while it reads a large buffer, so a thread
        can run this while the event loop sends the same bytes.
        """
        digest = hashlib.sha256()
        for segment in self.segments:
            digest.update(segment)
        return digest.hexdigest()

    async def digest(self) -> str:
        """The SHA-256 of the whole stream, in hex: :attr:`sha256`, or hashed in a thread."""
        if self.sha256:
            return self.sha256
        return await asyncio.to_thread(self.compute_sha256)

    async def achunks(self, offset: int, size: int) -> AsyncIterator[memoryview]:
        """:meth:`chunks`, for ``async for`` (as a :class:`server.worker_stream.WorkerStream`'s)."""
        for chunk in self.chunks(offset, size):
            yield chunk

    def closer(self) -> Callable[[], None]:
        """What to call once the stream is sent: nothing to do for bytes held here."""
        return nothing

    def chunks(self, offset: int, size: int) -> Iterator[memoryview]:
        """Slices of at most ``size`` bytes of the stream from ``offset`` on, without copies."""
        for index, start, stop in spans(self.segment_sizes, offset, size):
            yield self.segments[index][start:stop]


def spans(sizes: list[int], offset: int, size: int) -> Iterator[tuple[int, int, int]]:
    """``(segment, start, stop)`` of the spans of at most ``size`` bytes that cover
    segments of ``sizes``, sent back to back, from byte ``offset`` on; none
    crosses from one segment into the next."""
    position = 0
    for index, length in enumerate(sizes):
        start = max(offset - position, 0)
        while start < length:
            stop = min(start + size, length)
            yield index, start, stop
            start = stop
        position += length


def nothing() -> None:
    """A stream's closer when closing it has nothing to do."""


def is_pickle(fmt: str, is_function: bool) -> bool:
    """Whether a result asked for as ``fmt`` is sent pickled whatever its value."""
    return fmt == "pickle" or (fmt == "auto" and not is_function)


def encode_stream(value: Any, fmt: str, is_function: bool, checksum: bool = True) -> ResultStream:
    """Encode ``value`` for streaming ("auto" is JSON for named calls that allow it).

    Without ``checksum`` the stream's ``sha256`` is left empty (see
    :meth:`ResultStream.compute_sha256`), so its first bytes can leave before
    all are hashed.

    Raises:
        FailedPrecondition: JSON was asked for but the value has none, Arrow
            cannot hold it, or it cannot be pickled.
    """
    stream = _encode_stream(value, fmt, is_function)
    if not checksum:
        return stream
    return dataclasses.replace(stream, sha256=stream.compute_sha256())


def _encode_stream(value: Any, fmt: str, is_function: bool) -> ResultStream:
    """:func:`encode_stream` without the hash."""
    segments: list[memoryview]
    if fmt == "arrow":
        data = memoryview(_arrow_ipc(value)).cast("B")  # Arrow's own buffer, not a copy
        return ResultStream("arrow", (data,))
    if not is_pickle(fmt, is_function):
        try:
            text = json.dumps(to_json(value), separators=(",", ":")).encode("utf-8")
        except NotJSON as exc:
            if fmt == "json":
                raise FailedPrecondition(
                    f"the result has no JSON form ({exc}); ask for RESULT_FORMAT_PICKLE",
                    reason="RESULT_NOT_JSON",
                ) from exc
        else:
            segments = [memoryview(text)]
            return ResultStream("json", tuple(segments))
    buffers: list[pickle.PickleBuffer] = []
    main = _pickled(_pickle.dumps_out_of_band, value, buffers.append)
    segments = [memoryview(main)]
    for buffer in buffers:
        try:
            segments.append(buffer.raw())
        except BufferError:  # not contiguous: copy this one
            segments.append(memoryview(bytes(buffer)))
    return ResultStream("pickle", tuple(segments))


def to_json(value: Any, _depth: int = 0) -> Any:
    """``value`` as plain JSON types (dict, list, str, float/int, bool, None).

    NumPy scalars become Python numbers and tuples become lists. Non-finite
    floats, non-string keys and other objects have no JSON form.

    Raises:
        NotJSON: naming the first part that has no JSON form.
    """
    if _depth > _MAX_DEPTH:
        raise NotJSON(f"nested deeper than {_MAX_DEPTH} levels")
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        if abs(value) > 2**53:
            raise NotJSON(f"integer {value} is too large for a JSON number")
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise NotJSON(f"{value} is not a finite number")
        return float(value)  # also turns numpy.float64 (a float subclass) into a float
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "shape", None) == () and hasattr(value, "dtype"):
        return to_json(item(), _depth + 1)  # NumPy scalar or 0-d array
    if isinstance(value, (list, tuple)):
        return [to_json(v, _depth + 1) for v in value]
    if isinstance(value, Mapping):
        out = {}
        for key, v in value.items():
            if not isinstance(key, str):
                raise NotJSON(f"dict key {key!r} is not a string")
            out[key] = to_json(v, _depth + 1)
        return out
    cls = type(value)
    raise NotJSON(f"{cls.__module__}.{cls.__qualname__}")


def small_for_inline(value: Any) -> bool:
    """Whether pickling ``value`` is cheap enough to do on the event loop."""
    if value is None or isinstance(value, (bool, int, float)):
        return True
    return isinstance(value, (str, bytes)) and len(value) < INLINE_PICKLE_LIMIT


def to_arrow(value: Any) -> bytes:
    """``value`` as an Arrow IPC stream: a pandas DataFrame or Series, or an Arrow table.

    Raises:
        FailedPrecondition: The value is not tabular (the message names its
            type), or Arrow cannot hold it (a column of mixed types).
    """
    return _arrow_ipc(value).to_pybytes()


def _arrow_ipc(value: Any) -> Any:
    """:func:`to_arrow`'s stream, in the ``pyarrow.Buffer`` Arrow wrote it to."""
    try:
        import pyarrow as pa
    except ImportError as exc:  # an install without dask[dataframe]
        raise FailedPrecondition(
            "this server cannot write Arrow (pyarrow is not installed); "
            "ask for RESULT_FORMAT_PICKLE or RESULT_FORMAT_JSON",
            reason="ARROW_UNSUPPORTED",
        ) from exc

    try:
        table = _as_table(pa, value)
        if table is not None:
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        # e.g. a column of mixed types: Arrow wants one type per column.
        raise FailedPrecondition(
            f"the result has no Arrow form ({type(exc).__name__}: {exc}); give each column "
            "values of one type (for example with astype(str)), or ask for "
            "RESULT_FORMAT_PICKLE",
            reason="RESULT_NOT_ARROW",
        ) from exc
    if table is None:
        cls = type(value)
        raise FailedPrecondition(
            f"the result ({cls.__module__}.{cls.__qualname__}) is not a table, so it has no "
            "Arrow form; ask for RESULT_FORMAT_PICKLE or RESULT_FORMAT_JSON",
            reason="RESULT_NOT_ARROW",
            metadata={"type": f"{cls.__module__}.{cls.__qualname__}"},
        )
    return sink.getvalue()


def _as_table(pa: Any, value: Any) -> Any:
    """``value`` as an Arrow table, or ``None`` when it is not tabular."""
    if isinstance(value, pa.Table):
        return value
    if isinstance(value, pa.RecordBatch):
        return pa.Table.from_batches([value])
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas comes with dask[dataframe]
        return None
    if isinstance(value, pd.Series):
        value = value.to_frame()
    if isinstance(value, pd.DataFrame):
        return pa.Table.from_pandas(
            value, preserve_index=not isinstance(value.index, pd.RangeIndex)
        )
    return None


def encode(value: Any, fmt: str, is_function: bool) -> EncodedResult:
    """Encode ``value`` as ``fmt`` ("auto" is JSON for named calls that allow it).

    Raises:
        FailedPrecondition: JSON or Arrow was asked for but the value has none,
            or it cannot be pickled.
    """
    if fmt == "arrow":
        data = to_arrow(value)
        return EncodedResult("arrow", arrow=data, size_bytes=len(data))
    if not is_pickle(fmt, is_function):
        try:
            data = to_json(value)
        except NotJSON as exc:
            if fmt == "json":
                raise FailedPrecondition(
                    f"the result has no JSON form ({exc}); ask for RESULT_FORMAT_PICKLE",
                    reason="RESULT_NOT_JSON",
                ) from exc
        else:
            return EncodedResult("json", json=data, size_bytes=_json_size(data))
    blob = _pickled(_pickle.dumps, value)
    return EncodedResult("pickle", pickle=blob, size_bytes=len(blob))


def _pickled(dumps: Any, value: Any, *args: Any) -> bytes:
    """``dumps(value, *args)``; a value that cannot be pickled is the caller's to fix.

    Raises:
        FailedPrecondition: Pickling the value failed (the message names its
            type and what the pickler said), rather than an internal error.
    """
    try:
        return dumps(value, *args)
    except Exception as exc:  # whatever the value's own pickling raises
        cls = type(value)
        raise FailedPrecondition(
            f"the result ({cls.__module__}.{cls.__qualname__}) cannot be pickled "
            f"({type(exc).__name__}: {exc}): return a value that can be (for example a list "
            "rather than a generator)",
            reason="RESULT_NOT_PICKLABLE",
            metadata={"type": f"{cls.__module__}.{cls.__qualname__}"},
        ) from exc


def _json_size(data: Any) -> int:
    return len(json.dumps(data, separators=(",", ":")))
