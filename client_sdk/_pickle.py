"""Every use of cloudpickle on the client side, in one place."""

from __future__ import annotations

import bisect
import hashlib
import io
import itertools
import logging
import pickle
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import cloudpickle

from client_sdk.types import ObjectRef

logger = logging.getLogger(__name__)

#: Protocol 5 keeps NumPy and Arrow buffers out of band where the reader supports it.
PROTOCOL = 5


#: How a pickle names an uploaded object: the server puts the object in its place.
PERSISTENT_ID_PREFIX = "dask-compute-object:"


class _RefPickler(cloudpickle.Pickler):  # type: ignore[misc]  # (cloudpickle is untyped)
    """A cloudpickler that writes uploaded objects as references, collecting their ids."""

    def __init__(self, file: Any) -> None:
        super().__init__(file, protocol=PROTOCOL)
        self.object_ids: list[str] = []

    def persistent_id(self, obj: Any) -> str | None:
        if isinstance(obj, ObjectRef):
            if obj.object_id not in self.object_ids:
                self.object_ids.append(obj.object_id)
            return PERSISTENT_ID_PREFIX + obj.object_id
        return None


def _dump(obj: Any) -> tuple[bytes, list[str]]:
    buffer = io.BytesIO()
    pickler = _RefPickler(buffer)
    pickler.dump(obj)
    return buffer.getvalue(), pickler.object_ids


def dump_call(
    func: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]
) -> tuple[bytes, list[str]]:
    """Serialize a call as the ``(callable, args, kwargs)`` tuple the server expects.

    Returns:
        The payload, and the ids of the uploaded objects it refers to.
    """
    return _dump((func, tuple(args), dict(kwargs)))


def dump_graph(obj: Any) -> tuple[bytes, list[str]]:
    """Serialize a collection, a tuple of collections, or a ``(graph, keys)`` pair.

    Returns:
        The payload, and the ids of the uploaded objects it refers to.
    """
    return _dump(obj)


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
