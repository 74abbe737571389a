"""Every use of cloudpickle on the client side, in one place."""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import io
import itertools
import logging
import pickle
import reprlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import cloudpickle

from client_sdk.types import ObjectRef

logger = logging.getLogger(__name__)

#: Protocol 5 keeps NumPy and Arrow buffers out of band where the reader supports it.
PROTOCOL = 5


#: How a pickle names an uploaded object: the server puts the object in its place.
PERSISTENT_ID_PREFIX = "dask-compute-object:"

#: How a pickle names a job's result: the server puts the result in its place.
JOB_PERSISTENT_ID_PREFIX = "dask-compute-job:"


class _RefPickler(cloudpickle.Pickler):  # type: ignore[misc]  # (cloudpickle is untyped)
    """A cloudpickler that writes uploaded objects and jobs as references,
    collecting their ids (a job stands for its result, on the server)."""

    def __init__(self, file: Any) -> None:
        super().__init__(file, protocol=PROTOCOL)
        # Imported here: client_sdk.job imports this module (through _convert).
        from client_sdk.job import JobBase

        self._job_type = JobBase
        self.object_ids: list[str] = []
        self.job_ids: list[str] = []

    def persistent_id(self, obj: Any) -> str | None:
        if isinstance(obj, ObjectRef):
            if obj.object_id not in self.object_ids:
                self.object_ids.append(obj.object_id)
            return PERSISTENT_ID_PREFIX + obj.object_id
        if isinstance(obj, self._job_type):
            if obj.job_id not in self.job_ids:
                self.job_ids.append(obj.job_id)
            return JOB_PERSISTENT_ID_PREFIX + obj.job_id
        return None


@dataclasses.dataclass(frozen=True)
class Payload:
    """Pickled work and the ids of what it refers to on the server."""

    data: bytes
    object_ids: list[str]
    job_ids: list[str]


def _dump(obj: Any, parts: Callable[[], Sequence[tuple[str, Any]]]) -> Payload:
    buffer = io.BytesIO()
    pickler = _RefPickler(buffer)
    try:
        pickler.dump(obj)
    except Exception as exc:
        raise _unpicklable(parts(), exc) from exc
    return Payload(buffer.getvalue(), pickler.object_ids, pickler.job_ids)


def _unpicklable(parts: Sequence[tuple[str, Any]], exc: Exception) -> TypeError:
    """A :class:`TypeError` naming the first of ``parts`` that cannot be pickled, and what to do."""
    what, culprit = "the work", None
    for name, part in parts:
        try:
            _RefPickler(io.BytesIO()).dump(part)
        except Exception:
            what, culprit = name, part
            break
    shown = (
        ""
        if culprit is None
        else f" ({reprlib.repr(culprit)}, of type {type(culprit).__qualname__})"
    )
    return TypeError(
        f"{what}{shown} cannot be sent to the server: {type(exc).__name__}: {exc}. "
        "Work travels pickled: pass data the function can use (a Job or an uploaded "
        "object stands for data held on the server), or make the object inside the "
        "function instead of passing it"
    )


def dump_call(func: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]) -> Payload:
    """Serialize a call as the ``(callable, args, kwargs)`` tuple the server expects.

    Returns:
        The payload, with the ids of the uploaded objects and jobs it refers to.

    Raises:
        TypeError: Something in it cannot be pickled (the message names it).
    """

    def parts() -> list[tuple[str, Any]]:
        named = [("the function", func)]
        named += [(f"argument {i}", a) for i, a in enumerate(args)]
        return named + [(f"keyword argument {k!r}", v) for k, v in kwargs.items()]

    return _dump((func, tuple(args), dict(kwargs)), parts)


def dump_graph(obj: Any) -> Payload:
    """Serialize a collection, a tuple of collections, or a ``(graph, keys)`` pair.

    Returns:
        The payload, with the ids of the uploaded objects and jobs it refers to.

    Raises:
        TypeError: Something in it cannot be pickled (the message names it).
    """

    def parts() -> list[tuple[str, Any]]:
        graph = obj[0] if isinstance(obj, tuple) and len(obj) == 2 else None
        if isinstance(graph, Mapping):
            return [(f"the task {key!r} of the graph", task) for key, task in graph.items()]
        named = []
        for collection in obj if isinstance(obj, (tuple, list)) else (obj,):
            tasks = getattr(collection, "__dask_graph__", None)
            for key, task in dict(tasks() if tasks is not None else {}).items():
                named.append((f"the task {key!r} of the collection", task))
        return named

    return _dump(obj, parts)


class ObjectBytes:
    """An object's upload: its pickle and out-of-band buffers, back to back but never joined.

    ``len()`` gives their total size; a slice ``[start:stop]`` gives that
    range as ``bytes``, copied from the pieces it spans (as slicing the
    joined bytes would), so an upload costs one chunk of extra memory, not
    a second copy of the object.
    """

    def __init__(self, pieces: Sequence[Any]) -> None:
        self.pieces = tuple(memoryview(p).cast("B") for p in pieces)
        self._starts = list(itertools.accumulate((p.nbytes for p in self.pieces), initial=0))

    def __len__(self) -> int:
        return self._starts[-1]

    def __getitem__(self, index: slice) -> bytes:
        if not isinstance(index, slice):
            raise TypeError("ObjectBytes takes slices only")
        start, stop, step = index.indices(len(self))
        if step != 1:
            raise ValueError("ObjectBytes takes contiguous slices only")
        parts = []
        piece = bisect.bisect_right(self._starts, start) - 1
        while start < stop:
            offset = self._starts[piece]
            end = min(stop, offset + self.pieces[piece].nbytes)
            parts.append(self.pieces[piece][start - offset : end - offset])
            start, piece = end, piece + 1
        return bytes(parts[0]) if len(parts) == 1 else b"".join(parts)

    def __bytes__(self) -> bytes:
        return b"".join(self.pieces)

    def sha256(self) -> str:
        """The SHA-256 (hex) of the bytes, hashed piece after piece."""
        digest = hashlib.sha256()
        for piece in self.pieces:
            digest.update(piece)
        return digest.hexdigest()


def encode_object_pieces(value: Any) -> tuple[ObjectBytes, list[int], str]:
    """What to upload for ``value``: its pickle and out-of-band buffers, without joining them.

    Returns:
        The bytes (sliced into chunks to send), the segments' sizes, and
        their SHA-256 (hex).
    """
    buffers: list[pickle.PickleBuffer] = []
    main = cloudpickle.dumps(value, protocol=PROTOCOL, buffer_callback=buffers.append)
    data = ObjectBytes([main] + [b.raw() for b in buffers])
    return data, [p.nbytes for p in data.pieces], data.sha256()


def loads(data: Any, buffers: Sequence[Any] = ()) -> Any:
    """Load a result the server sent, with its protocol-5 out-of-band ``buffers``."""
    return pickle.loads(data, buffers=buffers)


def load_exception(data: bytes) -> BaseException | None:
    """The remote exception, or ``None`` when it cannot be rebuilt here."""
    if not data:
        return None
    try:
        exc = pickle.loads(data)
    except Exception:
        return None
    return exc if isinstance(exc, BaseException) else None
