"""Whether the job that a call is running for was cancelled, for work that can stop early.

A thread cannot be stopped from outside, so a cancelled job's call runs on:
on the ``threads`` and ``synchronous`` pools it holds a thread (counted as
abandoned, see :mod:`server.pools`), and on a Dask worker it holds one of the
worker's threads, which Dask gives to no other task until the call returns.
Work that waits in steps can ask :func:`cancelled` between them and return
early; the built-in ``sleep`` does, so a cancelled or timed-out sleep frees
its thread within :data:`STEP` seconds instead of sleeping on for nobody.

On a Dask worker the answer is the worker's own: the task of the running
call is no longer one the worker is executing for a client (Dask marks a
running task ``cancelled`` when its futures are released). In a pool thread
of the server, :mod:`server.pools` sets the check for the call it runs.
Nothing here blocks; each call costs a dictionary lookup or two.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

#: The longest a cooperative wait should go between two looks.
STEP = 0.05

_local = threading.local()
#: Dask's states for a task whose run was given up (or never is, any more).
_GIVEN_UP = frozenset({"cancelled", "released", "forgotten"})


@contextmanager
def checked_by(check: Callable[[], bool]) -> Iterator[None]:
    """Within the block, :func:`cancelled` in this thread answers ``check()``."""
    previous = getattr(_local, "check", None)
    _local.check = check
    try:
        yield
    finally:
        _local.check = previous


def cancelled() -> bool:
    """Whether the job this thread's call runs for was cancelled (False when unknown)."""
    check = getattr(_local, "check", None)
    if check is not None:
        return check()
    return _task_given_up()


def _task_given_up() -> bool:
    try:
        from distributed import get_worker

        worker = get_worker()
        key = worker.get_current_task()
    except (ImportError, ValueError, KeyError):  # not in a task on a Dask worker
        return False
    task = worker.state.tasks.get(key)
    return task is None or task.state in _GIVEN_UP


def sleep(seconds: float) -> bool:
    """``time.sleep(seconds)`` in steps, ending early if the job is cancelled.

    Returns:
        True if it slept the whole time, False if it stopped because the job
        was cancelled.
    """
    import time

    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if cancelled():
            return False
        time.sleep(min(left, STEP))
    return True
