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

The ``processes`` pool itself, retired and ended when a job cancelled there
must be stopped, is :class:`server.process_pools.ProcessPools`.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import functools
import logging
import threading
from collections.abc import Callable
from typing import Any

from server import cancellation, job_errors
from server.errors import RETRY_DELAY, ResourceExhausted

logger = logging.getLogger(__name__)


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


class _Waiter:
    """A call (or a place asked for with :meth:`Gate.enter`) waiting for its place.

    ``start`` is called, from whichever thread freed the place, once the
    place is its own; it must be safe to call from any thread.
    """

    __slots__ = ("owner", "start")

    def __init__(self, owner: str, start: Callable[[], None]) -> None:
        self.owner = owner
        self.start = start


class _Call:
    """One job call through :meth:`Gate.call`: where it is (changed under the gate's lock)."""

    __slots__ = ("running", "state", "waiter")

    #: Waiting for a place; given one and about to start; handed to the pool;
    #: returned; cancelled while it ran; dropped before it started; cancelled
    #: between being given its place and starting (its start drops it).
    WAITING, STARTED, RETURNED, ABANDONED, DROPPED, CANCELLED = range(6)

    def __init__(self) -> None:
        self.state = _Call.WAITING
        self.waiter: _Waiter | None = None
        #: The pool's future of the call, once it was handed to the pool.
        self.running: concurrent.futures.Future[None] | None = None


class Gate:
    """Admission of job calls to one local pool; see the module docstring.

    A place freed by a returning call goes to the next waiting call in the
    returning call's own thread: the waiting call is handed to the pool at
    once, without a turn of the event loop between, so that a busy pool's
    threads never sit idle while calls wait. The counts are kept under a lock
    of the gate's own; the event loop is told of each call's end afterwards.

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
        self._waiting: collections.deque[_Waiter] = collections.deque()
        self._lock = threading.Lock()

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
            raise ResourceExhausted(
                why,
                reason="POOL_ABANDONED_LIMIT",
                metadata={
                    "scheduler": self.name,
                    "limit_name": "max_abandoned_threads",
                    "limit": self.max_abandoned,
                },
                retry_delay=RETRY_DELAY,
            )

    async def enter(self, owner: str) -> None:
        """Wait for a place for one call of ``owner``'s (in order of arrival);
        :meth:`leave` gives it back."""
        loop = asyncio.get_running_loop()
        place: asyncio.Future[None] = loop.create_future()

        def given() -> None:  # on the loop, once the place is ours
            if place.cancelled():
                self.leave(owner)  # given just as its waiter was cancelled
            else:
                place.set_result(None)

        waiter = _Waiter(owner, lambda: _on_loop(loop, given))
        with self._lock:
            if self._may_enter(owner):
                self._take(owner)
                return
            self._waiting.append(waiter)
        try:
            await place
        except asyncio.CancelledError:
            with self._lock:
                waiting = waiter in self._waiting
                if waiting:
                    self._waiting.remove(waiter)
            if not waiting and place.done() and not place.cancelled():
                self.leave(owner)  # it was given a place just as it was cancelled
            raise

    def leave(self, owner: str) -> None:
        """A call of ``owner``'s returned: its place goes to the next that fits
        (any thread)."""
        with self._lock:
            self._give_back(owner)
            starting = self._next()
        _start(starting)

    def abandon(self, owner: str) -> None:
        """A call of ``owner``'s was cancelled while it ran: free its place now,
        and count it abandoned until :meth:`returned` (any thread)."""
        with self._lock:
            self.abandoned += 1
            abandoned = self.abandoned
            self._give_back(owner)
            starting = self._next()
        logger.warning(
            "the %s pool: a cancelled job's call of %s's goes on running (%s); "
            "%d such calls now (at most %d)",
            self.name,
            owner,
            self.why_running,
            abandoned,
            self.max_abandoned,
        )
        _start(starting)

    def returned(self) -> None:
        """An abandoned call returned at last (any thread)."""
        with self._lock:
            self.abandoned -= 1

    async def call(
        self,
        executor: concurrent.futures.Executor,
        occupancy: Occupancy,
        func: Callable[..., Any],
        /,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        """``func(*args, **kwargs)`` of a job in ``executor``, once the gate lets it in.

        The job holds its occupancy from now until the call returns (or is
        dropped before it started), even if the job is cancelled meanwhile:
        then its place is freed for others and the call counts as abandoned
        until it returns.

        ``func`` may run a job's code: what it raises reaches the awaiting task
        through :func:`server.job_errors.job_exception` (an ordinary exception).
        """
        owner = occupancy.owner
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[Any] = loop.create_future()
        call = _Call()
        work = functools.partial(func, *args, **kwargs)

        def stopped(error: BaseException | None, value: Any) -> None:
            # On the loop, once the call returned (or was dropped): the job's
            # work stopped, and the outcome goes to whoever still awaits it.
            occupancy.leave()
            if outcome.done():  # the awaiting task was cancelled
                return
            if isinstance(error, asyncio.CancelledError):
                outcome.cancel()  # dropped before it started
            elif error is None:
                outcome.set_result(value)
            else:
                outcome.set_exception(error)

        def run() -> None:  # in the pool's thread
            try:
                with cancellation.checked_by(lambda: call.state == _Call.ABANDONED):
                    result: tuple[BaseException | None, Any] = (None, work())
            except BaseException as exc:
                result = (job_errors.job_exception(exc), None)
            with self._lock:
                if call.state == _Call.ABANDONED:
                    self.abandoned -= 1
                    starting: list[_Waiter] = []
                else:
                    self._give_back(owner)
                    starting = self._next()
                call.state = _Call.RETURNED
            _start(starting)  # (the next call is handed to the pool before this thread is free)
            _on_loop(loop, stopped, *result)

        def dropped(running: concurrent.futures.Future[None]) -> None:
            if not running.cancelled():
                return
            # The pool shut down (or the call was cancelled) before it started.
            with self._lock:
                call.state = _Call.DROPPED
                self._give_back(owner)
                starting = self._next()
            _start(starting)
            _on_loop(loop, stopped, asyncio.CancelledError(), None)

        def start() -> None:  # any thread, once the place is the call's
            with self._lock:
                if call.state == _Call.CANCELLED:  # cancelled since it was given its place
                    call.state = _Call.DROPPED
                    self._give_back(owner)
                    starting = self._next()
                else:
                    call.state = _Call.STARTED
            if call.state == _Call.DROPPED:
                _start(starting)
                _on_loop(loop, stopped, asyncio.CancelledError(), None)
                return
            try:
                call.running = executor.submit(run)
            except RuntimeError:  # the pool was shut down
                dropped_now: concurrent.futures.Future[None] = concurrent.futures.Future()
                dropped_now.cancel()
                dropped(dropped_now)
                return
            call.running.add_done_callback(dropped)

        occupancy.enter()
        with self._lock:
            if self._may_enter(owner):
                self._take(owner)
                now = True
            else:
                call.waiter = _Waiter(owner, start)
                self._waiting.append(call.waiter)
                now = False
        if now:
            start()
        try:
            return await outcome
        except asyncio.CancelledError:
            self._cancelled(call, owner, occupancy)
            raise

    def _cancelled(self, call: _Call, owner: str, occupancy: Occupancy) -> None:
        """The task awaiting ``call`` was cancelled: drop the call, or abandon it."""
        with self._lock:
            waited = call.state == _Call.WAITING
            if waited and call.waiter in self._waiting:
                self._waiting.remove(call.waiter)  # type: ignore[arg-type]
                call.state = _Call.DROPPED
            elif waited:
                # Given its place, not started yet: its start drops it (and
                # tells the loop its work stopped).
                call.state = _Call.CANCELLED
                return
        if waited:
            occupancy.leave()  # it never started
            return
        running = call.running
        if running is not None and running.cancel():
            return  # not started yet: ``dropped`` frees its place
        with self._lock:
            abandon = call.state == _Call.STARTED
            if abandon:
                call.state = _Call.ABANDONED
        if abandon:
            self.abandon(owner)

    def _may_enter(self, owner: str) -> bool:
        """Whether a new call of ``owner``'s takes a place now (lock held): it
        fits, and no earlier call of ``owner``'s waits."""
        return self._fits(owner) and not any(w.owner == owner for w in self._waiting)

    def _fits(self, owner: str) -> bool:
        return self.running < self.size and self._by_owner[owner] < self.per_caller

    def _take(self, owner: str) -> None:
        self.running += 1
        self._by_owner[owner] += 1

    def _give_back(self, owner: str) -> None:
        self.running -= 1
        self._by_owner[owner] -= 1
        if self._by_owner[owner] <= 0:
            del self._by_owner[owner]

    def _next(self) -> list[_Waiter]:
        """Give free places to the waiters that fit, in order (lock held); the
        caller starts them once it has let go of the lock."""
        starting = []
        for waiter in list(self._waiting):
            if self.running >= self.size:
                break
            if self._fits(waiter.owner):
                self._waiting.remove(waiter)
                self._take(waiter.owner)
                starting.append(waiter)
        return starting


def _start(waiters: list[_Waiter]) -> None:
    for waiter in waiters:
        waiter.start()


def _on_loop(loop: asyncio.AbstractEventLoop, callback: Callable[..., object], *args: Any) -> None:
    """``callback(*args)`` on ``loop`` (from any thread); nothing if the loop has closed."""
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:  # the loop closed meanwhile: nobody waits any more
        pass


async def call_in(pool: concurrent.futures.Executor, func: Callable[..., Any], *args: Any) -> Any:
    """``func(*args)`` in ``pool``'s thread, awaited: ``loop.run_in_executor``, lighter.

    The thread hands the outcome straight to the event loop, rather than
    through a pool future chained to an asyncio one; a trivial call comes
    back about 20 µs sooner. Cancelling the awaiting task drops the call if
    it has not started (a started one runs to its end), as with
    ``run_in_executor``. For the service's own work; jobs' calls go through
    :meth:`Gate.call`.
    """
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def settle(error: BaseException | None, value: Any) -> None:
        if future.done():  # the awaiting task was cancelled
            return
        if error is None:
            future.set_result(value)
        else:
            future.set_exception(error)

    def call() -> None:
        try:
            value = func(*args)
        except BaseException as exc:
            _on_loop(loop, settle, job_errors.job_exception(exc), None)
        else:
            _on_loop(loop, settle, None, value)

    def dropped(started: concurrent.futures.Future[None]) -> None:
        if started.cancelled() and not loop.is_closed():  # the pool shut down first
            _on_loop(loop, future.cancel)

    started = pool.submit(call)
    started.add_done_callback(dropped)
    try:
        return await future
    except asyncio.CancelledError:
        started.cancel()
        raise
