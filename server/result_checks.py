"""Whether a job's result can be held: checked in the job's own thread as its work returns.

(For a ``distributed`` call, in its task on the worker: :func:`on_worker`.)

A succeeded job's result is held as a value and answered later, encoded as
its caller asks (JSON, a pickle, Arrow), and pickled into its record. A
value that cannot be pickled (a generator, a lock) has no form an answer
could carry unless it has a JSON one, which such values never have: a job
that returns one fails with a :class:`TypeError` naming the value's type,
rather than succeeding with a result that no later call can answer.

A result that only lacks the form asked for (JSON of a set, Arrow of a
column of mixed types) can still be answered as a pickle: the job succeeds,
and a call asking for that form is answered FAILED_PRECONDITION saying why,
as before (:mod:`server.results`).

The check costs nothing for the small scalars most jobs return (a ``ping``
's "pong"), runs in the job's thread (never on the event loop), and is the
encoding an answer in the job's own format needs: a pickle, or JSON for a
named function's result, kept (:attr:`ResultCheck.encoded`) so that the
inline answer and the record's copy need not encode the value again.
NumPy and Arrow data go out of band while checking, so they are not copied.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import dask
from dask.sizeof import sizeof

from server import _pickle, results
from server.errors import FailedPrecondition

#: Results about this large (bytes, by ``dask.sizeof``) or less are encoded as
#: JSON in the job's thread when JSON is the form its job answers in: at
#: least what an answer carries inline (``--inline-result-bytes`` is at most
#: 3 MiB). Larger ones are answered as a stream, and only checked here.
JSON_CHECK_BYTES = 3 * 1024 * 1024

#: Results of ``distributed`` calls about this large (bytes, by ``dask.sizeof``)
#: or less are pickled on the worker, in their task, to check them (see
#: :func:`on_worker`): at most what an answer carries inline or a record keeps
#: (``--inline-result-bytes``, ``--stored-result-bytes``: 1 MiB by default),
#: so the check costs about what one encoding of those costs.
WORKER_CHECK_BYTES = 1024 * 1024

#: The message of the TypeError that fails a job whose result cannot be pickled.
UNPICKLABLE = (
    "the job's result ({cls.__module__}.{cls.__qualname__}) cannot be pickled "
    "({exc.__class__.__name__}: {exc}), so no call could answer it: return a value "
    "that can be (for example a list rather than a generator)"
)

#: A job's result check (a :class:`ResultCheck`): called with the job's value
#: in the thread that made it; what it raises fails the job.
Check = Callable[[Any], None]


class ResultCheck:
    """The check of one job's result; call it with the value, in the job's thread.

    Args:
        fmt: The job's result format ("auto", "json", "pickle", "arrow").
        is_function: Whether the job is a named function's call ("auto"
            answers JSON then, when the value has a JSON form).
    """

    def __init__(self, fmt: str, is_function: bool) -> None:
        self.fmt = fmt
        self.is_function = is_function
        #: The value encoded as the check found it (JSON, or an in-band
        #: pickle), or ``None`` (a small scalar, or a pickle with NumPy data).
        self.encoded: results.EncodedResult | None = None

    def __call__(self, value: Any) -> None:
        """Check ``value``, keeping its encoding in :attr:`encoded`.

        Raises:
            TypeError: ``value`` cannot be pickled (the message names its type).
        """
        if results.small_for_inline(value):
            return  # always picklable, and cheaper to encode than to check
        wants_json = self.fmt == "json" or (self.fmt == "auto" and self.is_function)
        if wants_json and sizeof(value) <= JSON_CHECK_BYTES:
            try:
                self.encoded = results.encode(value, "json", True)
            except FailedPrecondition:  # no JSON form: it must still be picklable
                pass
            else:
                return  # plain JSON types are picklable
        buffers: list[Any] = []
        try:
            blob = _pickle.dumps_out_of_band(value, buffers.append)
        except Exception as exc:  # whatever the value's own pickling raises
            cls = type(value)
            raise TypeError(UNPICKLABLE.format(cls=cls, exc=exc)) from exc
        if not buffers:  # then it is the pickle an answer or the record needs
            self.encoded = results.EncodedResult("pickle", pickle=blob, size_bytes=len(blob))


def checked(
    check: Check | None,
    pick: Callable[[Any], Any] | None,
    func: Callable[..., Any],
    /,
    *args: Any,
    **kwargs: Any,
) -> Any:
    """``func(*args, **kwargs)`` (through ``pick``), its value checked in this thread.

    A job's call in a pool thread, as :mod:`server.execution` makes it: the
    check runs where the value was made, and counts as the job's work.
    """
    value = func(*args, **kwargs)
    if pick is not None:
        value = pick(value)
    if check is not None:
        check(value)
    return value


def first(values: tuple) -> Any:
    """The first of ``values`` (one collection's value out of ``dask.compute``'s tuple)."""
    return values[0]


def unless_collection(check: Check | None) -> Check | None:
    """``check``, for a lazy call's value: a Dask collection is computed (and checked) next."""
    if check is None:
        return None

    def check_value(value: Any) -> None:
        if not dask.is_dask_collection(value):
            check(value)

    return check_value


def _worker_check(max_bytes: int) -> Callable[..., Any]:
    """A new ``checked_on_worker(func, *args, **kwargs)``: the task of :func:`on_worker`.

    Made in a function, so that cloudpickle sends it by value (the workers
    of an existing cluster need not have this package installed); it names
    nothing of this package.
    """
    message = UNPICKLABLE

    def checked_on_worker(func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        value = func(*args, **kwargs)
        if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
            return value
        from dask.sizeof import sizeof

        if sizeof(value) > max_bytes:
            return value
        import cloudpickle

        try:
            cloudpickle.dumps(value, protocol=5, buffer_callback=lambda buffer: None)
        except Exception as exc:  # whatever the value's own pickling raises
            raise TypeError(message.format(cls=type(value), exc=exc)) from exc
        return value

    return checked_on_worker


#: The task of :func:`on_worker` for workers that import this package (the
#: server's own cluster): pickled by reference, so a job's submission costs
#: no more than its own function's (by value it costs about 90 µs a job).
checked_on_worker = _worker_check(WORKER_CHECK_BYTES)
checked_on_worker.__qualname__ = checked_on_worker.__name__


def on_worker(func: Callable[..., Any], by_value: bool = False) -> Callable[..., Any]:
    """``func`` as a ``distributed`` task that checks its value where it was made.

    A call's value stays on the worker that made it, and is pickled only when
    it is fetched: one that cannot be (a generator, a lock) would be a success
    that no later call can answer. The task fails instead, with the
    :class:`TypeError` of a local job's check. Cheap on the hot path: scalars
    and strings are never checked; other values of up to
    :data:`WORKER_CHECK_BYTES` (by ``dask.sizeof``) are pickled with their
    buffers (NumPy, Arrow data) out of band, so not copied, in the task's own
    thread on the worker; larger ones are not pickled twice: they are checked
    when first encoded, as before.

    Args:
        func: The job's call.
        by_value: The workers may not import this package (an existing
            cluster's): the check travels by value with each task.
    """
    check = _worker_check(WORKER_CHECK_BYTES) if by_value else checked_on_worker
    return functools.partial(check, func)
