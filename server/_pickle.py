"""Every use of cloudpickle on the server side, in one place.

Loading a payload runs the caller's code: only :mod:`server.core` calls
:func:`load_payload`, after the caller was allowed to send code. Whatever
loading raises is refused as :class:`server.errors.InvalidPayload`, by the
rule of :mod:`server.job_errors` (:func:`server.job_errors.load_error`),
which also runs pickled calls in pool processes
(:func:`server.job_errors.call_in_child`).
"""

from __future__ import annotations

import io
import pickle
import traceback
from collections.abc import Mapping
from typing import Any

import cloudpickle
import dask

from server import job_errors
from server.errors import InvalidPayload
from server.objects import PERSISTENT_ID_PREFIX

#: How a pickle names another job's result (see :mod:`server.dependencies`).
JOB_PERSISTENT_ID_PREFIX = "dask-compute-job:"

#: Protocol 5 keeps NumPy and Arrow buffers out of band where the reader supports it.
PROTOCOL = 5


#: Types whose pickle is the same from the standard pickler, which is many
#: times quicker than cloudpickle's for the small values most jobs return.
_PLAIN_TYPES = frozenset({str, bytes, int, float, bool, complex, type(None)})


def dumps(obj: Any) -> bytes:
    """Serialize ``obj`` with cloudpickle (plain scalars with the standard pickler)."""
    if type(obj) in _PLAIN_TYPES:
        return pickle.dumps(obj, protocol=PROTOCOL)
    return cloudpickle.dumps(obj, protocol=PROTOCOL)


def loads(data: bytes) -> Any:
    """Load what :func:`dumps` made (the standard unpickler reads cloudpickle's output)."""
    return pickle.loads(data)


def dumps_out_of_band(obj: Any, buffer_callback: Any) -> bytes:
    """Serialize ``obj`` with protocol 5, handing large buffers to ``buffer_callback``."""
    return cloudpickle.dumps(obj, protocol=PROTOCOL, buffer_callback=buffer_callback)


class _ObjectUnpickler(pickle.Unpickler):
    """Puts held objects (and jobs' results) where the pickle names them by persistent id."""

    def __init__(self, data: bytes, objects: Mapping[str, Any]) -> None:
        super().__init__(io.BytesIO(data))
        self._objects = objects

    def persistent_load(self, pid: Any) -> Any:
        prefix = PERSISTENT_ID_PREFIX
        if isinstance(pid, str) and pid.startswith(prefix) and pid[len(prefix) :] in self._objects:
            return self._objects[pid[len(prefix) :]]
        if isinstance(pid, str) and pid.startswith(JOB_PERSISTENT_ID_PREFIX):
            if pid in self._objects:  # jobs go by their whole persistent id
                return self._objects[pid]
            raise pickle.UnpicklingError(
                f"the payload uses job {pid[len(JOB_PERSISTENT_ID_PREFIX) :][:100]!r}, "
                "which its request does not list in job_ids"
            )
        raise pickle.UnpicklingError(
            f"the payload refers to object {str(pid)[:100]!r}, which its request does not list"
        )


def load_payload(payload: bytes, what: str, objects: Mapping[str, Any] | None = None) -> Any:
    """Load serialized work sent by a caller.

    ``objects`` maps the ids of held objects the payload may refer to (by the
    persistent id "dask-compute-object:<id>") to what stands in their place,
    and the persistent ids "dask-compute-job:<id>" of jobs it uses to what
    stands in for their results.

    Raises:
        InvalidPayload: The bytes are not a pickle this server can load; the
            message says why (a module missing on the server, a truncated
            payload, anything raised while loading, SystemExit included: see
            :func:`server.job_errors.load_error`).
    """
    if not payload:
        raise InvalidPayload(
            f"{what}: payload is empty", field=f"{what}.payload", reason="EMPTY_PAYLOAD"
        )
    try:
        # The C unpickler's fast path when there is nothing to put in place;
        # a reference to an unlisted object then fails as in _ObjectUnpickler.
        if objects:
            return _ObjectUnpickler(payload, objects).load()
        try:
            return pickle.loads(payload)
        except pickle.UnpicklingError as exc:
            if "persistent" not in str(exc):
                raise
            return _ObjectUnpickler(payload, {}).load()
    except BaseException as exc:  # loading ran the caller's code: SystemExit too
        raise job_errors.load_error(exc, what) from exc


def load_call(payload: bytes, objects: Mapping[str, Any] | None = None) -> tuple[Any, tuple, dict]:
    """Load a pickled call: a ``(callable, args, kwargs)`` tuple.

    Raises:
        InvalidPayload: Not loadable, or not shaped as a call.
    """
    obj = load_payload(payload, "pickled_call", objects)
    if (
        not isinstance(obj, tuple)
        or len(obj) != 3
        or not callable(obj[0])
        or not isinstance(obj[1], (tuple, list))
        or not isinstance(obj[2], Mapping)
    ):
        raise InvalidPayload(
            "pickled_call: payload must be a (callable, args tuple, kwargs dict) tuple, "
            f"got {_shape(obj)}",
            field="pickled_call.payload",
        )
    return obj[0], tuple(obj[1]), dict(obj[2])


def load_graph(payload: bytes, objects: Mapping[str, Any] | None = None) -> tuple[str, Any, Any]:
    """Load a Dask graph payload.

    Returns:
        ``("collection", collection, None)``, ``("collections", tuple, None)``
        or ``("graph", mapping, keys)``.

    Raises:
        InvalidPayload: Not loadable, or not one of the shapes above.
    """
    obj = load_payload(payload, "graph", objects)
    if dask.is_dask_collection(obj):
        return "collection", obj, None
    if isinstance(obj, (tuple, list)):
        if len(obj) == 2 and isinstance(obj[0], Mapping) and not dask.is_dask_collection(obj[0]):
            return "graph", obj[0], obj[1]
        if obj and all(dask.is_dask_collection(item) for item in obj):
            return "collections", tuple(obj), None
    raise InvalidPayload(
        "graph: payload must be a Dask collection, a tuple of collections, or a "
        f"(graph mapping, keys) pair, got {_shape(obj)}",
        field="graph.payload",
    )


def describe_callable(func: Any) -> str:
    """A qualified name for a callable, for job records."""
    module = getattr(func, "__module__", None) or ""
    name = getattr(func, "__qualname__", None) or type(func).__qualname__
    return f"{module}.{name}" if module else name


def exception_type_name(exc: BaseException) -> str:
    """``module.QualName`` of an exception's type."""
    cls = type(exc)
    return f"{cls.__module__}.{cls.__qualname__}"


def format_traceback(exc: BaseException) -> str:
    """The exception's traceback as text."""
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def dump_exception(exc: BaseException) -> bytes:
    """The exception cloudpickled without its traceback (sent as text), or ``b""``."""
    tb = exc.__traceback__
    try:
        return dumps(exc.with_traceback(None))
    except Exception:
        return b""
    finally:
        exc.__traceback__ = tb


def warm_up() -> int:
    """A no-op for pool processes, so they start (and import Dask) before the first job."""
    import os

    import dask.array  # noqa: F401  (the import is the warm-up)

    return os.getpid()


def _shape(obj: Any) -> str:
    if isinstance(obj, tuple):
        return f"a tuple of {len(obj)}"
    return type(obj).__name__
