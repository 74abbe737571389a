"""Waiting for jobs to end, and how far along they are.

:class:`Waiting` owns the waiters: a job this server runs wakes them the
moment its end is recorded (:meth:`Waiting.wake`); a job another replica
runs is followed in the shared store, each waiter with pauses that back off
(:class:`Backoff`) from 50 ms up to :data:`FOREIGN_POLL_INTERVAL`, on a grid
of :data:`LOOK_TICK`. Every look goes through :class:`ForeignLooks`: one
query (of states, in the store's reader threads) for all the jobs a waiter
follows, and for every waiter whose pause ends on the same tick; only a job
whose state changed is read again in full.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from server.cluster import SCHEDULER_TIMEOUT, Cluster
from server.errors import InvalidArgument, JobNotFound
from server.jobs import JobRecord, JobState, JobTable

logger = logging.getLogger(__name__)

#: Longest pause between looks at the shared store while waiting for another replica's job.
FOREIGN_POLL_INTERVAL = 1.0
#: Most jobs in one WaitJobs call.
MAX_WAIT = 10_000
#: Pauses between looks at the shared store end on a grid of this many seconds
#: (of the event loop's clock), so that the looks of waiters due together are one.
LOOK_TICK = 0.05


class Backoff:
    """Pauses that double from ``first`` up to ``longest`` seconds, within a deadline."""

    def __init__(self, timeout: float | None, first: float = 0.05) -> None:
        self._loop = asyncio.get_running_loop()
        self.deadline = None if timeout is None else self._loop.time() + timeout
        self._delay = first

    def remaining(self) -> float | None:
        """Seconds left before the deadline (``None``: no deadline)."""
        return None if self.deadline is None else self.deadline - self._loop.time()

    def expired(self) -> bool:
        """Whether the deadline has passed."""
        remaining = self.remaining()
        return remaining is not None and remaining <= 0

    def next(self) -> float:
        """The next pause (never past the deadline): it ends on a tick of
        :data:`LOOK_TICK`, where the pauses of other waiters end too."""
        now = self._loop.time()
        pause = math.ceil((now + self._delay) / LOOK_TICK) * LOOK_TICK - now
        self._delay = min(self._delay * 2, FOREIGN_POLL_INTERVAL)
        remaining = self.remaining()
        return pause if remaining is None else max(0.0, min(pause, remaining))


class ForeignLooks:
    """Looks at the shared store for waiters: one query answers all who ask together.

    Those who ask in one turn of the event loop (waiters whose pauses end on
    the same tick), or while a look runs, are answered by the next look: the
    states of all the jobs they asked about, in one query
    (``states_of``, in the store's reader threads).

    Args:
        store: The job records.
    """

    def __init__(self, store: JobTable) -> None:
        self.store = store
        self._wanted: set[str] = set()
        self._answer: asyncio.Future[dict[str, JobState]] | None = None
        self._looking: asyncio.Task | None = None

    async def states(self, job_ids: list[str]) -> dict[str, JobState]:
        """The stored states of those of ``job_ids`` that are stored, by id."""
        self._wanted.update(job_ids)
        if self._answer is None:
            self._answer = asyncio.get_running_loop().create_future()
        answer = self._answer
        if self._looking is None:
            self._looking = asyncio.create_task(self._look(), name="foreign-looks")
        found = await asyncio.shield(answer)  # (one waiter leaving cancels nobody's look)
        return {job_id: found[job_id] for job_id in job_ids if job_id in found}

    async def _look(self) -> None:
        try:
            while self._answer is not None:
                await asyncio.sleep(0)  # those who ask in this turn go in this look
                answer, self._answer = self._answer, None
                wanted, self._wanted = self._wanted, set()
                try:
                    found = await self.store.states_of(wanted)
                except Exception as exc:  # each waiter gets it
                    answer.set_exception(exc)
                    answer.exception()  # (retrieved, even if every waiter left)
                else:
                    answer.set_result(found)
        finally:
            self._looking = None


class Waiting:
    """See the module docstring.

    Args:
        store: The job records.
        runtimes: The runner's runtimes of the jobs this server runs.
        get_job: The record of a job, if the caller may see it.
        cluster: For the progress of jobs on the cluster.
        as_stored: A record of this server's as the store holds it (while its
            end is being written, as it was).
    """

    def __init__(
        self,
        store: JobTable,
        runtimes: dict[str, Any],
        get_job: Callable[[str, Any], Awaitable[JobRecord]],
        cluster: Cluster,
        as_stored: Callable[[JobRecord], JobRecord] = lambda record: record,
    ) -> None:
        self.store = store
        self.runtimes = runtimes
        self.get_job = get_job
        self.cluster = cluster
        self.as_stored = as_stored
        self.looks = ForeignLooks(store)
        # WaitJobs callers: the event each set is woken by, under each job it waits for.
        self._waiters: dict[str, set[asyncio.Event]] = {}
        # Cancels of adopted jobs whose Run's caller went away, until they are done.
        self._cancels: set[asyncio.Task] = set()

    def wake(self, job_id: str) -> None:
        """Wake the WaitJobs callers waiting for ``job_id`` (its end is recorded)."""
        for waiter in self._waiters.pop(job_id, ()):
            waiter.set()

    async def wait_job(
        self, job_id: str, timeout: float | None, caller: Any
    ) -> tuple[JobRecord, bool]:
        """Wait until the job finishes or ``timeout`` seconds pass (see ComputeCore.wait_job)."""
        record = await self.get_job(job_id, caller)
        if record.state.finished:
            return record, False
        runtime = self.runtimes.get(job_id)
        if runtime is None:
            return await self._poll(record, Backoff(timeout))
        backoff = Backoff(timeout)
        try:
            await asyncio.wait_for(runtime.done.wait(), timeout)
        except asyncio.TimeoutError:
            return await self.get_job(job_id, caller), True
        record = await self.get_job(job_id, caller)
        if record.state.finished or job_id in self.runtimes:
            return record, False
        # Another replica adopted it (this one's lease ran out): its end is that replica's.
        return await self._poll(record, backoff)

    async def end_of_run(
        self, job_id: str, caller: Any, cancel: Callable[[], Coroutine[Any, Any, Any]]
    ) -> JobRecord:
        """The end of a ``Run``'s job, once this server is done with it.

        That is the end recorded here, or, if another replica adopted the job
        while the ``Run`` waited (this one's lease ran out), that replica's,
        waited for in the shared store. If the ``Run``'s caller goes away
        meanwhile, ``cancel()`` cancels the job where it runs now, as a
        ``Run``'s job is when nobody is left to read its result.
        """
        record = await self.get_job(job_id, caller)
        if record.state.finished:
            return record
        try:
            record, _ = await self._poll(record, Backoff(None))
        except asyncio.CancelledError:
            task = asyncio.create_task(cancel(), name=f"cancel-adopted-{job_id}")
            self._cancels.add(task)
            task.add_done_callback(self._cancelled)
            raise
        return record

    def _cancelled(self, task: asyncio.Task) -> None:
        self._cancels.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("%s: could not cancel the job: %s", task.get_name(), task.exception())

    async def _poll(self, record: JobRecord, backoff: Backoff) -> tuple[JobRecord, bool]:
        """Wait for a job that another replica runs, by watching the shared store."""
        while True:
            (record,) = await self._look([record])
            if record.state.finished or not self.store.durable:
                return record, not record.state.finished
            if backoff.expired():
                return record, True
            await asyncio.sleep(backoff.next())

    async def _look(self, records: list[JobRecord]) -> list[JobRecord]:
        """The records of jobs of other replicas as stored now: one look at the
        store for all (shared with other waiters), and a read of each whose
        state changed."""
        states = await self.looks.states([r.job_id for r in records])
        current = []
        for record in records:
            state = states.get(record.job_id)
            if state is None:
                raise JobNotFound(f"no job with id {record.job_id!r} (never accepted, or expired)")
            if state is not record.state or not self.store.durable:
                record = await self.store.refresh(record.job_id)
            current.append(record)
        return current

    async def wait_jobs(
        self, job_ids: list[str], timeout: float | None, caller: Any
    ) -> tuple[list[JobRecord], bool]:
        """Wait until at least one of the jobs finishes (see ComputeCore.wait_jobs)."""
        if not job_ids or len(job_ids) > MAX_WAIT:
            raise InvalidArgument(
                f"WaitJobs takes 1 to {MAX_WAIT} job ids, got {len(job_ids)}",
                field="job_ids",
                reason="WAIT_JOB_COUNT",
                metadata={"limit": MAX_WAIT, "count": len(job_ids)},
            )
        if len(set(job_ids)) != len(job_ids):
            raise InvalidArgument(
                "WaitJobs got the same job id more than once",
                field="job_ids",
                reason="DUPLICATE_JOB_IDS",
            )
        backoff = Backoff(timeout)
        records = [await self.get_job(job_id, caller) for job_id in job_ids]
        wake = asyncio.Event()
        while True:
            finished = [r for r in records if r.state.finished]
            if finished:
                return finished, False
            remaining = backoff.remaining()
            if remaining is not None and remaining <= 0:
                return [], True
            # Jobs of another replica are followed in the shared store, not woken.
            foreign = [r.job_id for r in records if r.job_id not in self.runtimes]
            if foreign and self.store.durable:
                remaining = backoff.next()
            for record in records:
                self._waiters.setdefault(record.job_id, set()).add(wake)
            try:
                await asyncio.wait_for(wake.wait(), remaining)
            except asyncio.TimeoutError:
                pass
            finally:
                for record in records:
                    waiters = self._waiters.get(record.job_id)
                    if waiters is not None:
                        waiters.discard(wake)
                        if not waiters:
                            del self._waiters[record.job_id]
            wake.clear()
            # (The caller may see them all: asked once, above.) One look for
            # all those of other replicas.
            theirs = [r for r in records if r.job_id not in self.runtimes]
            looked = {r.job_id: r for r in await self._look(theirs)} if theirs else {}
            records = [looked.get(r.job_id) or self._current(r) for r in records]

    def _current(self, record: JobRecord) -> JobRecord:
        """The record of a job this server runs, as stored now (never waits)."""
        copy = self.store.cached(record.job_id)
        return record if copy is None else self.as_stored(copy)

    async def progress(self, job_id: str, caller: Any) -> tuple[int, int]:
        """``(tasks done, tasks in all)`` of a job (see ComputeCore.progress)."""
        record = await self.get_job(job_id, caller)
        runtime = self.runtimes.get(job_id)
        if runtime is None:
            return (1, 1) if record.state is JobState.SUCCEEDED else (0, 0)
        progress = runtime.progress
        if progress.roots and not record.state.finished and self.cluster.ok:
            try:
                await asyncio.wait_for(
                    progress.refresh_from_scheduler(self.cluster.client), SCHEDULER_TIMEOUT
                )
            except Exception as exc:  # progress is advisory: keep the last counts
                logger.debug("progress of job %s unavailable: %s", job_id, exc)
        if record.state is JobState.SUCCEEDED and progress.total:
            return progress.total, progress.total
        return progress.done, progress.total
