"""``wait``, ``as_completed`` and ``fire_and_forget`` for jobs, as ``dask.distributed`` has them for futures.

Each takes :class:`~client_sdk.Job` (the blocking client's) or
:class:`~client_sdk.AsyncJob` objects, not a mix: with blocking jobs they
block, with asynchronous ones ``wait`` is awaited and ``as_completed`` is
iterated with ``async for``. None of them asks the server anything: the
client already watches every job it hands out and learns of each end as it
happens (one long poll for all of them), so these wait on local state.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any, NamedTuple

from client_sdk.aio import AsyncJob
from client_sdk.errors import JobTimeout
from client_sdk.job import Job, JobBase
from client_sdk.types import JobState

__all__ = ["DoneAndNotDone", "as_completed", "fire_and_forget", "wait"]

#: The values ``return_when`` takes, as in :func:`concurrent.futures.wait` and Dask's ``wait``.
RETURN_WHEN = (
    concurrent.futures.ALL_COMPLETED,
    concurrent.futures.FIRST_COMPLETED,
    concurrent.futures.FIRST_EXCEPTION,
)


class DoneAndNotDone(NamedTuple):
    """What :func:`wait` returns: the jobs that ended, and the others."""

    done: set[Any]
    not_done: set[Any]


def _jobs(jobs: JobBase | Iterable[JobBase]) -> list[Any]:
    listed = [jobs] if isinstance(jobs, JobBase) else list(jobs)
    for job in listed:
        if not isinstance(job, JobBase):
            raise TypeError(f"expected jobs (Job or AsyncJob), got {type(job).__name__}: {job!r}")
    if len({type(job) is AsyncJob for job in listed}) > 1:
        raise TypeError("pass either Job or AsyncJob objects, not both")
    return listed


def wait(
    jobs: JobBase | Iterable[JobBase],
    timeout: float | None = None,
    return_when: str = concurrent.futures.ALL_COMPLETED,
) -> Any:
    """Wait until the jobs end (or the first one does, or the first fails).

    As ``distributed.wait``: ``return_when`` is ``"ALL_COMPLETED"``,
    ``"FIRST_COMPLETED"`` or ``"FIRST_EXCEPTION"``; the jobs' own errors are
    not raised (read them from the jobs).

    Returns:
        ``(done, not_done)``, a :class:`DoneAndNotDone`; with asynchronous
        jobs, an awaitable of it.

    Raises:
        JobTimeout: ``timeout`` seconds passed before the jobs were done as
            asked (a ``TimeoutError``, as Dask's ``wait`` raises); they go on.
    """
    if return_when not in RETURN_WHEN:
        raise ValueError(
            f"return_when must be one of {', '.join(RETURN_WHEN)}, got {return_when!r}"
        )
    listed = _jobs(jobs)
    if listed and isinstance(listed[0], AsyncJob):
        return _wait_async(listed, timeout, return_when)
    done, not_done = concurrent.futures.wait(listed, timeout, return_when)
    _check(done, not_done, timeout, return_when)
    return DoneAndNotDone(done, not_done)


async def _wait_async(jobs: list[AsyncJob], timeout: float | None, return_when: str) -> Any:
    by_future = {job._future: job for job in jobs}
    if by_future:
        done_futures, _ = await asyncio.wait(by_future, timeout=timeout, return_when=return_when)
    else:
        done_futures = set()
    done = {by_future[future] for future in done_futures}
    not_done = {job for job in jobs if job not in done}
    _check(done, not_done, timeout, return_when)
    return DoneAndNotDone(done, not_done)


def _check(done: set[Any], not_done: set[Any], timeout: float | None, return_when: str) -> None:
    if not not_done:
        return
    if return_when == concurrent.futures.FIRST_COMPLETED and done:
        return
    failed = any(not job.cancelled() and _error(job) is not None for job in done)
    if return_when == concurrent.futures.FIRST_EXCEPTION and failed:
        return
    raise JobTimeout(f"{len(not_done)} of the jobs did not end within {timeout:g}s; they go on")


def _error(job: Any) -> BaseException | None:
    future = job._future if isinstance(job, AsyncJob) else job
    return future.exception() if not future.cancelled() else None


class as_completed:
    """The jobs in the order they end, as ``distributed.as_completed``.

    ``for job in as_completed(jobs)`` with blocking jobs, ``async for`` with
    asynchronous ones. With ``with_results=True`` each item is ``(job,
    value)``; a failed job then raises its error there, unless
    ``raise_errors=False``, which gives ``(job, exception)`` instead.
    Jobs may be added while it is iterated (:meth:`add`).
    """

    def __init__(
        self,
        jobs: Iterable[JobBase] = (),
        with_results: bool = False,
        raise_errors: bool = True,
    ) -> None:
        self._jobs = _jobs(jobs)
        self.with_results = with_results
        self.raise_errors = raise_errors

    def add(self, job: JobBase) -> None:
        """Add a job to those waited for."""
        self._jobs.extend(_jobs([*self._jobs, job])[len(self._jobs) :])

    def count(self) -> int:
        """How many jobs are left to give out."""
        return len(self._jobs)

    def is_empty(self) -> bool:
        """Whether every job has been given out."""
        return not self._jobs

    def __iter__(self) -> Iterator[Any]:
        if self._jobs and isinstance(self._jobs[0], AsyncJob):
            raise TypeError("iterate asynchronous jobs with `async for`")
        while self._jobs:
            done, _ = concurrent.futures.wait(
                self._jobs, return_when=concurrent.futures.FIRST_COMPLETED
            )
            for job in [job for job in self._jobs if job in done]:
                self._jobs.remove(job)
                yield self._item(job)

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._async_items()

    async def _async_items(self) -> AsyncIterator[Any]:
        if self._jobs and not isinstance(self._jobs[0], AsyncJob):
            raise TypeError("iterate blocking jobs with `for`")
        while self._jobs:
            futures = {job._future: job for job in self._jobs}
            done, _ = await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
            for job in [job for job in self._jobs if job._future in done]:
                self._jobs.remove(job)
                yield await self._async_item(job)

    def _item(self, job: Job) -> Any:
        if not self.with_results:
            return job
        try:
            return job, job.result()
        except Exception as exc:
            if self.raise_errors:
                raise
            return job, exc

    async def _async_item(self, job: AsyncJob) -> Any:
        if not self.with_results:
            return job
        try:
            return job, await job.result()
        except Exception as exc:
            if self.raise_errors:
                raise
            return job, exc


def fire_and_forget(jobs: JobBase | Iterable[JobBase]) -> None:
    """Let the jobs run to their end with nobody reading their results.

    Every job already runs to its end whether or not its caller holds on
    to it or stays connected (unlike a Dask future, whose task Dask forgets
    once no client wants it, hence Dask's ``fire_and_forget``). What this
    adds: once a job ends, its result is released on the server at once
    instead of being held until ``--result-ttl``.
    """
    for job in _jobs(jobs):
        job.add_done_callback(_release)


def _release(job: Any) -> None:
    # Only a job that ended on the server: not one the client lost (closed).
    if job._info.state not in (JobState.SUCCEEDED, JobState.FAILED):
        return
    outcome = job.release()
    if asyncio.iscoroutine(outcome):  # an AsyncJob's: on the client's event loop
        asyncio.ensure_future(outcome)
