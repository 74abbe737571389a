"""What jobs may hold of the local pools, and what a job holds until its work stops.

A thread cannot be stopped: a ``threads`` or ``synchronous`` job that is
cancelled (by its caller, a time limit, shutdown) stops counting as running,
but its thread goes on until the job's code returns. Without care such
threads fill the pool, and every later job on it waits for ever.

- :class:`Gate` admits job calls to one pool: at most ``size`` at once, each
  caller at most its ``share`` of them (so one caller cannot hold a pool
  the others need). A call whose job was cancelled while it ran is
  *abandoned*: it frees its place for others at once (its pool has spare
  threads for it), and is counted until its thread returns; past
  ``max_abandoned`` such calls the pool takes no new jobs (the gate says
  why, so that the job is refused at once instead of waiting).
- :class:`Occupancy` is what one job holds of the pools: its job counts
  against its caller's limits until every call it made has returned.
- :class:`ProcessPools` holds the ``processes`` pool: a job cancelled there
  retires it, and its processes are ended (off the event loop); until they
  are gone, the job's call counts as abandoned at the gate and in its
  occupancy, as a thread's would.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from server import job_errors
from server.errors import ResourceExhausted

logger = logging.getLogger(__name__)

#: Seconds a retired pool's processes get to end on SIGTERM before SIGKILL.
END_GRACE = 2.0


class Occupancy:
    """The calls one job has running in the local pools.

    Args:
        owner: The job's caller (for the per-caller shares).
    """

    def __init__(self, owner: str = "") -> None:
        self.owner = owner
        self._calls = 0
        self._when_stopped: list[Callable[[], None]] = []

    @property
    def stopped(self) -> bool:
        """Whether none of the job's calls is running."""
        return self._calls == 0

    def enter(self) -> None:
        """A call of the job's started."""
        self._calls += 1

    def leave(self) -> None:
        """A call of the job's returned."""
        self._calls -= 1
        if self._calls == 0:
            callbacks, self._when_stopped = self._when_stopped, []
            for callback in callbacks:
                callback()

    def when_stopped(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once no call of the job runs (now, if none does)."""
        if self._calls == 0:
            callback()
        else:
            self._when_stopped.append(callback)


class Gate:
    """Admission of job calls to one local pool; see the module docstring.

    Args:
        name: The pool's name, for messages ("threads", "synchronous", ...).
        size: How many job calls may run at once.
        share: The fraction of ``size`` one caller may hold (at least one call).
        max_abandoned: How many abandoned calls the pool keeps running before
            it takes no new jobs (its threads beyond ``size``).
        why_running: Why abandoned calls run on, for messages.
    """

    def __init__(
        self,
        name: str,
        size: int,
        share: float = 1.0,
        max_abandoned: int = 0,
        why_running: str = "their threads cannot be stopped",
    ) -> None:
        self.name = name
        self.why_running = why_running
        self.size = size
        self.per_caller = max(1, int(size * share))
        self.max_abandoned = max_abandoned
        self.running = 0
        self.abandoned = 0
        self._by_owner: collections.Counter[str] = collections.Counter()
        self._waiting: collections.deque[tuple[str, asyncio.Future[None]]] = collections.deque()

    def refusal(self) -> str | None:
        """Why the pool takes no new job now, or ``None`` if it does."""
        if self.abandoned and self.abandoned >= self.max_abandoned:
            return (
                f"the {self.name} pool has {self.abandoned} calls of cancelled jobs still running "
                f"({self.why_running}; it keeps at most {self.max_abandoned}, "
                "max_abandoned_threads): retry when they end"
            )
        return None

    def check(self) -> None:
        """Raise :class:`ResourceExhausted` if the pool takes no new job."""
        why = self.refusal()
        if why is not None:
            raise ResourceExhausted(why)

    async def enter(self, owner: str) -> None:
        """Wait for a place for one call of ``owner``'s (in order of arrival)."""
        if self._fits(owner) and not any(waiter == owner for waiter, _ in self._waiting):
            self._take(owner)
            return
        place: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((owner, place))
        try:
            await place
        except asyncio.CancelledError:
            if place.done() and not place.cancelled():
                self.leave(owner)  # it was given a place just as it was cancelled
            else:
                self._waiting.remove((owner, place))
            raise

    def leave(self, owner: str) -> None:
        """A call of ``owner``'s returned: its place goes to the next that fits."""
        self.running -= 1
        self._by_owner[owner] -= 1
        if self._by_owner[owner] <= 0:
            del self._by_owner[owner]
        self._wake()

    def abandon(self, owner: str) -> None:
        """A call of ``owner``'s was cancelled while it ran: free its place now,
        and count it abandoned until :meth:`returned`."""
        self.abandoned += 1
        logger.warning(
            "the %s pool: a cancelled job's call of %s's goes on running (%s); "
            "%d such calls now (at most %d)",
            self.name,
            owner,
            self.why_running,
            self.abandoned,
            self.max_abandoned,
        )
        self.leave(owner)

    def returned(self) -> None:
        """An abandoned call returned at last."""
        self.abandoned -= 1
        self._wake()

    async def call(
        self,
        executor: concurrent.futures.Executor,
        occupancy: Occupancy,
        func: Callable[..., Any],
        /,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        """``func(*args, **kwargs)`` of a job in ``pool``, once the gate lets it in.

        The job holds its place (and its occupancy) until the call returns,
        even if the job is cancelled meanwhile: then the place is freed for
        others and the call counts as abandoned until it returns.
        """
        owner = occupancy.owner
        await self.enter(owner)
        occupancy.enter()
        state = {"returned": False, "abandoned": False}

        def returned() -> None:
            state["returned"] = True
            if state["abandoned"]:
                self.returned()
            else:
                self.leave(owner)
            occupancy.leave()

        def abandoned() -> None:
            if not state["returned"]:
                state["abandoned"] = True
                self.abandon(owner)

        call = functools.partial(func, *args, **kwargs)
        return await call_in(executor, call, finished=returned, abandoned=abandoned)

    def _fits(self, owner: str) -> bool:
        return self.running < self.size and self._by_owner[owner] < self.per_caller

    def _take(self, owner: str) -> None:
        self.running += 1
        self._by_owner[owner] += 1

    def _wake(self) -> None:
        for index, (owner, place) in enumerate(self._waiting):
            if self.running >= self.size:
                return
            if self._fits(owner):
                del self._waiting[index]
                self._take(owner)
                place.set_result(None)
                self._wake()
                return


async def call_in(
    pool: concurrent.futures.Executor,
    func: Callable[..., Any],
    *args: Any,
    finished: Callable[[], None] | None = None,
    abandoned: Callable[[], None] | None = None,
) -> Any:
    """``func(*args)`` in ``pool``'s thread, awaited: ``loop.run_in_executor``, lighter.

    The thread hands the outcome straight to the event loop, rather than
    through a pool future chained to an asyncio one; a trivial call comes
    back about 20 µs sooner. Cancelling the awaiting task abandons the call
    (and drops it if it has not started), as with ``run_in_executor``.

    ``finished`` is called on the event loop once the call has returned (or
    was dropped before it started), whether or not anyone still awaits it;
    ``abandoned``, when the awaiting task is cancelled while the call runs.

    ``func`` may run a job's code: what it raises reaches the awaiting task
    through :func:`server.job_errors.job_exception` (an ordinary exception).
    """
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def settle(error: BaseException | None, value: Any) -> None:
        # One hand-off to the loop per call: the call's place goes to the next
        # (``finished``), then its outcome to whoever still awaits it.
        if finished is not None:
            finished()
        if future.done():  # the awaiting task was cancelled
            return
        if error is None:
            future.set_result(value)
        else:
            future.set_exception(error)

    def call() -> None:
        try:
            value = func(*args)
        except BaseException as exc:  # noqa: BLE001  (the job's code: the rule decides)
            outcome: tuple[BaseException | None, Any] = (job_errors.job_exception(exc), None)
        else:
            outcome = (None, value)
        try:
            loop.call_soon_threadsafe(settle, *outcome)
        except RuntimeError:  # the loop closed meanwhile: nobody waits any more
            pass

    def dropped(started: concurrent.futures.Future) -> None:
        if started.cancelled() and not loop.is_closed():  # the pool shut down first
            loop.call_soon_threadsafe(future.cancel)
            if finished is not None:
                loop.call_soon_threadsafe(finished)

    started = pool.submit(call)
    started.add_done_callback(dropped)
    try:
        return await future
    except asyncio.CancelledError:
        if not started.cancel() and abandoned is not None:
            abandoned()  # it runs on: its thread cannot be stopped
        raise


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
