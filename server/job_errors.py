"""The one rule for exceptions raised by a job's code, at every boundary it crosses.

A job's code (a caller's function, a graph's tasks, a payload being loaded)
may raise anything. What reaches the server's event loop must be an
ordinary :class:`Exception`: a future refuses a StopIteration (the job
would never end); a CancelledError would read as the awaiting task's own
cancellation (its Run cancelled, the job "cancelled by its caller"); a
SystemExit or KeyboardInterrupt would stop the event loop, and the server
with it; a GeneratorExit or another BaseException would escape the job's
handling and leave it unfinished. So:

======================================  =======================================
the job's code raises                   the job fails with
======================================  =======================================
an Exception (not StopIteration)        that exception, as it is
StopIteration                           RuntimeError "the job raised
                                        StopIteration(...)", caused by it (as
                                        a generator's becomes one, PEP 479)
SystemExit, KeyboardInterrupt           RuntimeError "the job raised
                                        SystemExit(3,), reported as this error
                                        instead of stopping the server"
CancelledError, GeneratorExit, or any   RuntimeError "the job raised
other BaseException                     CancelledError(...)"
anything, while its payload is loaded   :class:`server.errors.InvalidPayload`
                                        (``INVALID_ARGUMENT``): the request is
                                        refused, no job runs
======================================  =======================================

:func:`job_exception` is that table. It is applied where the exception
leaves the job's code, since only there is a job's own CancelledError told
from a real cancellation:

- a pool or driver thread (the ``threads`` and ``synchronous`` schedulers,
  lazy functions, Dask's local schedulers, which re-raise their tasks'
  errors in the driver thread): :func:`server.pools.call_in`;
- a process of the ``processes`` pool: :func:`call_in_child`, which sends
  the traceback text back with the pickled exception;
- a Dask worker that is a thread of this server: the call is wrapped in
  :func:`run_user_code` (a SystemExit there would end the server); on any
  cluster, the task's error, when the job awaits it (its traceback is
  Dask's). On workers of their own, a SystemExit ends that worker as Dask
  decides, and the job fails with Dask's error;
- the coroutine awaiting a job: :func:`contain`, for whatever got past the
  above (it lets a cancellation through: there it is the job's);
- loading a payload: :func:`load_error` (used by :mod:`server._pickle`).

:func:`to_job_error` then turns the exception into the job's
:class:`server.jobs.JobError`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from server import _pickle
from server.errors import InvalidPayload
from server.jobs import JobError

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Attribute holding an exception's traceback as text, where it was taken
#: at the boundary (the objects themselves lose their chain when pickled).
TRACEBACK_ATTRIBUTE = "__dask_compute_traceback__"

_EXITS = (SystemExit, KeyboardInterrupt)


def _name(exc: BaseException) -> str:
    """``Type(args)`` for a message; the args as ``<unprintable>`` if their repr fails."""
    try:
        args = repr(exc.args)
    except BaseException:
        args = "(<unprintable>)"
    if len(args) > 500:
        args = args[:497] + "..."
    return f"{type(exc).__name__}{args}"


def is_ordinary(exc: BaseException) -> bool:
    """Whether ``exc`` may reach the event loop as itself: an Exception, not a StopIteration."""
    return isinstance(exc, Exception) and not isinstance(exc, StopIteration)


def job_exception(exc: BaseException) -> BaseException:
    """What an exception from a job's code becomes (the table of this module).

    Returns:
        ``exc`` itself when :func:`is_ordinary`, otherwise a RuntimeError
        caused by it, whose traceback text (``exc``'s, then its own line)
        is kept in :data:`TRACEBACK_ATTRIBUTE` so that it survives a pickle.
    """
    if is_ordinary(exc):
        return exc
    message = f"the job raised {_name(exc)}"
    if isinstance(exc, _EXITS):
        message += ", reported as this error instead of stopping the server"
    error = RuntimeError(message)
    error.__cause__ = exc
    setattr(error, TRACEBACK_ATTRIBUTE, _pickle.format_traceback(error))
    return error


def run_user_code(func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``func(*args, **kwargs)``, whatever it raises passed through :func:`job_exception`.

    Raises:
        Exception: Only ordinary ones (a RuntimeError for the others).
    """
    try:
        return func(*args, **kwargs)
    except BaseException as exc:  # the rule decides what goes on
        error = job_exception(exc)
        if error is exc:
            raise
        raise error from exc


async def contain(work: Awaitable[T]) -> T:
    """Await a job's ``work``, what it raises passed through :func:`job_exception`.

    A cancellation is let through, as is a GeneratorExit (the awaiting
    coroutine being closed): here they are the job's, not its code's (a
    job's own CancelledError was turned into a RuntimeError where it was
    raised).
    """
    try:
        return await work
    except (asyncio.CancelledError, GeneratorExit):
        raise
    except BaseException as exc:  # a SystemExit from a pool, say
        error = job_exception(exc)
        if error is exc:
            raise
        raise error from exc


def call_in_child(payload: bytes) -> tuple[bool, bytes, str]:
    """Run a pickled ``(callable, args, kwargs)`` in a process of the ``processes`` pool.

    Loading the call, running it and pickling its result all run the job's
    code; whatever they raise is passed through :func:`job_exception` here,
    in the child, so that the parent gets an ordinary exception.

    Returns:
        ``(ok, pickled result or exception, traceback text)``: the remote
        traceback survives the trip back, and a result the standard pickle
        cannot carry (a lambda, a local class) still can. The exception is
        ``b""`` when it cannot be pickled.
    """
    try:
        func, args, kwargs = _pickle.loads(payload)
        return True, _pickle.dumps(func(*args, **kwargs)), ""
    except BaseException as exc:
        error = job_exception(exc)
        return False, _pickle.dump_exception(error), _pickle.format_traceback(error)


def load_error(exc: BaseException, what: str) -> InvalidPayload:
    """The error that refuses a payload whose loading raised ``exc``.

    Loading a pickle runs code of the caller's choosing: whatever it raises
    (SystemExit included) means the payload cannot be used, which the caller
    is told, and no job runs.

    Args:
        exc: What loading raised.
        what: What was loaded, for the message ("pickled_call", "graph").
    """
    if isinstance(exc, InvalidPayload):
        return exc
    reason, metadata = "INVALID_PAYLOAD", {}
    if isinstance(exc, ModuleNotFoundError):
        reason, metadata = "MODULE_NOT_FOUND", {"module": exc.name or ""}
        message = (
            f"{what}: cannot load the payload: module {exc.name!r} is not installed on the "
            "server (install it there, or pickle the code by value with "
            "cloudpickle.register_pickle_by_value)"
        )
    elif is_ordinary(exc):
        message = f"{what}: cannot load the payload: {type(exc).__name__}: {_short(exc)}"
    else:
        message = f"{what}: cannot load the payload: it raised {_name(exc)}"
    error = InvalidPayload(message, field=f"{what}.payload", reason=reason, metadata=metadata)
    error.__cause__ = exc
    return error


def to_job_error(exc: BaseException) -> JobError:
    """The record of a job that failed with ``exc`` (already through the rule).

    The traceback is the one taken at the boundary when there is one
    (:data:`TRACEBACK_ATTRIBUTE`: a pool child's, a converted exception's),
    else ``exc``'s own; the exception is pickled without it, for the SDK to
    re-raise.
    """
    traceback_text = getattr(exc, TRACEBACK_ATTRIBUTE, None) or _pickle.format_traceback(exc)
    return JobError(
        type=_pickle.exception_type_name(exc),
        message=str(exc),
        traceback=traceback_text,
        pickled_exception=_pickle.dump_exception(exc),
    )


def _short(exc: BaseException, limit: int = 300) -> str:
    try:
        text = str(exc)
    except Exception:
        text = "<unprintable>"
    return text if len(text) <= limit else text[: limit - 3] + "..."
