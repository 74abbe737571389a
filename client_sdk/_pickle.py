"""Every use of cloudpickle on the client side, in one place."""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import cloudpickle

logger = logging.getLogger(__name__)

#: Protocol 5 keeps NumPy and Arrow buffers out of band where the reader supports it.
PROTOCOL = 5


def dump_call(func: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]) -> bytes:
    """Serialize a call as the ``(callable, args, kwargs)`` tuple the server expects."""
    return cloudpickle.dumps((func, tuple(args), dict(kwargs)), protocol=PROTOCOL)


def dump_graph(obj: Any) -> bytes:
    """Serialize a collection, a tuple of collections, or a ``(graph, keys)`` pair."""
    return cloudpickle.dumps(obj, protocol=PROTOCOL)


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
