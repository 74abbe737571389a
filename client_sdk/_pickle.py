"""Every use of cloudpickle on the client side, in one place."""

from __future__ import annotations

import hashlib
import io
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


class _RefPickler(cloudpickle.Pickler):
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


def encode_object(value: Any) -> tuple[bytes, list[int], str]:
    """Bytes to upload for ``value``: its pickle and out-of-band buffers, back to back.

    Returns:
        The bytes, the segments' sizes, and their SHA-256 (hex).
    """
    buffers: list[pickle.PickleBuffer] = []
    main = cloudpickle.dumps(value, protocol=PROTOCOL, buffer_callback=buffers.append)
    segments = [memoryview(main)] + [memoryview(b.raw()) for b in buffers]
    data = b"".join(segments)
    return data, [s.nbytes for s in segments], hashlib.sha256(data).hexdigest()


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
