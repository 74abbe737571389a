"""The ``processes`` pool: retired when a cancelled job's process must be stopped, and ended off the event loop.

A job cancelled on the ``processes`` pool retires the pool, and its
processes are ended (off the event loop); until they are gone, the job's
call counts as abandoned at its gate (:class:`server.pools.Gate`) and in its
occupancy, as a thread's would. The pools' processes end with the server,
however it ends (SIGKILL included): :class:`ParentWatch`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

#: Seconds a retired pool's processes get to end on SIGTERM before SIGKILL.
END_GRACE = 2.0


class ProcessPools:
    """The ``processes`` pool, retired when a cancelled job's process must be stopped.

    A process cannot run on for a job nobody waits for: when a job on the
    pool is cancelled while it runs, the pool is *retired*: new jobs go to a
    fresh pool at once, and the retired one's processes are ended as soon as
    no live job of another caller still runs there (at once, usually). They
    are ended in a thread of their own (SIGTERM, then SIGKILL past
    :data:`END_GRACE`), never on the event loop; then, on the loop, the
    cancelled calls are told (``ended``, see :meth:`abandon`).

    Args:
        new_pool: Starts a pool.
        end: Ends a pool's processes, blocking until they are gone.
    """

    def __init__(
        self, new_pool: Callable[[], Any], end: Callable[[Any], None] | None = None
    ) -> None:
        self._new_pool = new_pool
        self._end = end or end_pool
        self.current = new_pool()
        self._live: collections.Counter[int] = collections.Counter()
        self._retiring: dict[int, Any] = {}
        self._when_ended: dict[int, list[Callable[[], None]]] = {}

    def enter(self) -> Any:
        """The pool for a new call (counted live until :meth:`leave`)."""
        pool = self.current
        self._live[id(pool)] += 1
        return pool

    def leave(self, pool: Any) -> None:
        """A live call on ``pool`` returned."""
        self._live[id(pool)] -= 1
        self._end_if_done(pool)

    def abandon(self, pool: Any, ended: Callable[[], None] | None = None) -> None:
        """A call on ``pool`` was cancelled while it ran: retire the pool.

        ``ended`` is called once the pool's processes are gone (on the event
        loop, when one runs).
        """
        self._live[id(pool)] -= 1
        if pool is self.current:
            logger.warning("a cancelled job runs on in the processes pool: starting a new pool")
            self.current = self._new_pool()
        self._retiring[id(pool)] = pool
        if ended is not None:
            self._when_ended.setdefault(id(pool), []).append(ended)
        self._end_if_done(pool)

    def replace(self, broken: Any) -> None:
        """``broken`` lost a process: new calls get a new pool."""
        if self.current is broken:
            self.current = self._new_pool()

    def _end_if_done(self, pool: Any) -> None:
        if id(pool) in self._retiring and self._live[id(pool)] <= 0:
            del self._retiring[id(pool)]
            del self._live[id(pool)]
            callbacks = self._when_ended.pop(id(pool), [])
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no event loop to keep free: end it here
                self._ended(pool, callbacks)
                return
            threading.Thread(
                target=self._end_in_thread,
                args=(loop, pool, callbacks),
                name="dask-compute-end-pool",
                daemon=True,
            ).start()

    def _end_in_thread(
        self, loop: asyncio.AbstractEventLoop, pool: Any, callbacks: list[Callable[[], None]]
    ) -> None:
        try:
            self._end(pool)
        except Exception:  # its processes may live on: say so, and let the calls go
            logger.exception("a retired processes pool could not be ended")
        finally:
            try:
                loop.call_soon_threadsafe(self._told, callbacks)
            except RuntimeError:  # the loop closed meanwhile: nobody waits any more
                pass

    def _ended(self, pool: Any, callbacks: list[Callable[[], None]]) -> None:
        try:
            self._end(pool)
        finally:
            self._told(callbacks)

    @staticmethod
    def _told(callbacks: list[Callable[[], None]]) -> None:
        logger.info("ended a retired processes pool and the cancelled work it ran")
        for callback in callbacks:
            callback()

    def close(self) -> None:
        """End every pool, without waiting for abandoned work."""
        for pool in [self.current, *self._retiring.values()]:
            self._end(pool)
        self._retiring.clear()


def end_pool(pool: Any, grace: float = END_GRACE) -> None:
    """Shut a process pool down now, ending its processes rather than waiting for them.

    Blocks until they are gone: SIGTERM, and SIGKILL for those still alive
    ``grace`` seconds later (a job's code may ignore SIGTERM).
    """
    # ``_processes`` has been the pool's pid->Process map since Python 3.2.
    children = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for child in children:
        if child.is_alive():
            child.terminate()
    deadline = time.monotonic() + grace
    for child in children:
        child.join(timeout=max(0.0, deadline - time.monotonic()))
    for child in children:
        if child.is_alive():
            logger.warning("a processes-pool process ignored SIGTERM for %gs: killing it", grace)
            child.kill()
            child.join(timeout=5)


class ParentWatch:
    """Pool processes that end when the server's process does, however it ends.

    A pool process waits for calls on a queue of which it holds both ends, so
    it never sees the server go: one killed with SIGKILL would leave it (and
    multiprocessing's resource tracker, which waits for it) running for good.
    As Dask's own worker processes do (``distributed.process.AsyncProcess``),
    each pool process watches a pipe whose only write end the server holds:
    the kernel closes it when the server's process ends, and the process
    exits at once. (Not ``PR_SET_PDEATHSIG``: it fires when the *thread*
    that started the process ends, and pool processes are started from
    whichever thread submits or hands a call on.)

    Args:
        context: The multiprocessing context the pools start processes with.
    """

    def __init__(self, context: Any) -> None:
        # Kept open for the server's life (closed by the kernel when it ends).
        self.read_end, self._write_end = context.Pipe(duplex=False)

    def pool_options(self) -> dict[str, Any]:
        """The ``ProcessPoolExecutor`` options that make its processes watch the server."""
        return {"initializer": exit_with_parent, "initargs": (self.read_end,)}


def exit_with_parent(parent_alive: Any) -> None:
    """In a pool process: exit at once when the server's process has ended.

    ``parent_alive``: the read end of :class:`ParentWatch`'s pipe; nothing is
    ever written to it, so a read returns only when its write end is closed.
    """

    def watch() -> None:
        try:
            parent_alive.recv()
        except EOFError:
            os._exit(1)  # the server is gone: nobody will take this process's answers

    threading.Thread(target=watch, name="dask-compute-parent-watch", daemon=True).start()
