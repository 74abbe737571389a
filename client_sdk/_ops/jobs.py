"""Jobs as handles: submitting them (one, or many per round trip) and acting on one by id.

``submit``, ``submit_function`` and ``map`` return the client's job type,
already watched (the client's :meth:`~client_sdk._ops.base.Session._new_job`
hook); ``get_job``, ``job``, ``cancel`` and ``release`` act on a job by its id.
:func:`record` and :func:`cancel_job` need nothing of the client, so a job
runs them itself.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable
from typing import Any

from client_sdk import _convert
from client_sdk._ops import results
from client_sdk._ops.base import Session
from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk._sansio import Call, Op
from client_sdk.types import JobInfo, JobState

logger = logging.getLogger(__name__)

#: Most jobs in one SubmitJobs call (the server's limit).
MAX_BATCH = 10_000
#: A SubmitJobs call is cut short once its payloads reach this many bytes.
MAX_BATCH_BYTES = 16 * 1024 * 1024


def record(job_id: str) -> Op[JobInfo]:
    """A job's record as it is now (``GetJob``)."""
    response = yield Call("GetJob", pb.GetJobRequest(job_id=job_id))
    return _convert.job_info(response.job)


def cancel_job(job_id: str, reason: str = "") -> Op[JobInfo]:
    """Cancel a job (``CancelJob``); its record afterwards."""
    response = yield Call("CancelJob", pb.CancelJobRequest(job_id=job_id, reason=reason))
    return _convert.job_info(response.job)


class Jobs(Session):
    """The operations that submit jobs, and those that act on one by id."""

    def submit(
        self,
        # self positional-only, so that blocking() and coroutine() keep these
        # parameters in the clients' types (kwargs may hold any name).
        /,
        func: Callable[..., Any],
        *args: Any,
        scheduler: str | None = None,
        job_name: str | None = None,
        job_timeout: float | None = None,
        retryable: bool = False,
        **kwargs: Any,
    ) -> Op[Any]:
        """Send ``func(*args, **kwargs)`` to run on the service, without waiting.

        ``func`` and its arguments are cloudpickled: a function defined in
        ``__main__`` travels by value, one from an installed module by
        reference (the module must be installed on the server and workers).
        As with ``distributed.Client.submit``'s ``key`` and ``pure``, the
        keyword arguments named below are the job's, not ``func``'s; their
        ``job_`` prefix keeps common argument names such as ``timeout`` free
        for ``func``.

        Args:
            func: Any picklable callable.
            *args: Its positional arguments.
            scheduler: "distributed", "threads", "processes" or "synchronous";
                ``None`` is the server's default.
            job_name: A label for the job's record (``jobs`` lists it), at
                most 256 characters.
            job_timeout: The most seconds the job may run; past them the
                server cancels it and it fails with a timeout reason. ``None``
                is the server's limit (larger values are capped to it).
            retryable: Whether the job may run again from the start if the
                service restarts before it finishes (otherwise it fails).
            **kwargs: Its keyword arguments.

        Returns:
            A :class:`client_sdk.Job` (an :class:`client_sdk.AsyncJob` on the
            asynchronous client), already watched: a Future-like handle.

        Raises:
            VersionMismatch: This side cannot send pickled work to the server.
            InvalidArguments: The server could not load the payload.
        """
        yield from self._check_versions()
        spec = _convert.pickled_call_spec(func, args, kwargs, scheduler)
        _convert.job_options(spec, job_name, job_timeout, retryable)
        response = yield Call("SubmitJob", pb.SubmitJobRequest(job=spec))
        return self._new_job(_convert.job_info(response.job))

    def submit_function(
        self,
        /,
        function: str,
        *args: Any,
        scheduler: str | None = None,
        job_name: str | None = None,
        job_timeout: float | None = None,
        retryable: bool = False,
        **kwargs: Any,
    ) -> Op[Any]:
        """Submit a named function call without waiting.

        Args:
            function: The function's name.
            *args: Positional arguments (JSON values).
            scheduler: The scheduler; ``None`` is the server's default.
            job_name: A label for the job's record, at most 256 characters.
            job_timeout: The most seconds the job may run, as in :meth:`submit`.
            retryable: Whether a restart may run the job again, as in :meth:`submit`.
            **kwargs: Keyword arguments (JSON values).

        Returns:
            A :class:`client_sdk.Job` (:class:`client_sdk.AsyncJob` when async).
        """
        spec = _convert.function_call_spec(function, args, kwargs, scheduler)
        _convert.job_options(spec, job_name, job_timeout, retryable)
        response = yield Call("SubmitJob", pb.SubmitJobRequest(job=spec))
        return self._new_job(_convert.job_info(response.job))

    def map(
        self,
        /,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        *iterables: Iterable[Any],
        scheduler: str | None = None,
        batch_size: int = 1000,
        job_name: str | None = None,
        job_timeout: float | None = None,
        retryable: bool = False,
        **kwargs: Any,
    ) -> Op[list[Any]]:
        """Submit ``func`` over the items of the iterables, many calls per round trip.

        As the built-in ``map``: the i-th call gets the i-th item of each
        iterable, and stops at the shortest. Calls go to the server in
        ``SubmitJobs`` batches; a batch is accepted whole or not at all, but
        batches already accepted keep running if a later one is refused.

        Args:
            func: Any picklable callable.
            iterable: The first arguments.
            *iterables: Further positional arguments.
            scheduler: The scheduler; ``None`` is the server's default.
            batch_size: Most calls per round trip, 1 to 10,000 (default 1000).
                A batch is also cut at 16 MiB of payload.
            job_name: A label for every job's record, at most 256 characters.
            job_timeout: The most seconds each job may run, as in :meth:`submit`.
            retryable: Whether a restart may run the jobs again, as in :meth:`submit`.
            **kwargs: Keyword arguments passed to every call.

        Returns:
            One job per call, in order.
        """
        if not 1 <= batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size must be between 1 and {MAX_BATCH}, got {batch_size}")
        options = _convert.job_options(pb.JobSpec(), job_name, job_timeout, retryable)
        yield from self._check_versions()
        jobs = []
        calls = iter(zip(iterable, *iterables, strict=False))
        while batch := _next_batch(calls, func, kwargs, scheduler, batch_size, options):
            response = yield Call("SubmitJobs", pb.SubmitJobsRequest(jobs=batch))
            jobs.extend(self._new_jobs([_convert.job_info(j) for j in response.jobs]))
        return jobs

    def get_job(self, job_id: str) -> Op[JobInfo]:
        """A job's record as it is now.

        Raises:
            JobNotFound: No such job, or its record expired.
        """
        return (yield from record(job_id))

    def job(self, job_id: str, trust: bool = False) -> Op[Any]:
        """A Future-like handle on an existing job, for example one submitted elsewhere.

        Args:
            job_id: The job's id.
            trust: Load the job's pickled result or exception even if another
                caller submitted it. A pickle runs code of whoever made it
                when loaded: the pickles of this caller's own jobs (those
                submitted with the same token or certificate, from any
                process) are loaded; for another caller's (an admin may
                attach any job), by default a failed job raises
                :class:`~client_sdk.JobFailed` with the error's type, message
                and traceback text, and a pickled result raises
                :class:`~client_sdk.UntrustedResult`.

        Raises:
            JobNotFound: No such job, or its record expired.
        """
        info = yield from record(job_id)
        if not trust:
            trust = info.owner == (yield from self._caller_name())  # this caller's own job
        return self._new_job(info, owned=False, trust=trust)

    def release(self, job_id: str) -> Op[bool]:
        """Free a finished job's result on the server now, rather than when it expires.

        A job this client submitted releases a result too large to come inline
        once it has downloaded it (at the first ``result()``); other results
        stay until the server's result TTL unless released here.

        Returns:
            Whether there was a result to free.
        """
        return (yield from results.release(job_id))

    def cancel(self, job_id: str, reason: str = "") -> Op[bool]:
        """Cancel a queued or running job.

        Args:
            job_id: The job's id.
            reason: Recorded in the job's ``cancel_reason``.

        Returns:
            Whether the job is cancelled now (``False``: it had already
            succeeded or failed).
        """
        info = yield from cancel_job(job_id, reason)
        return info.state is JobState.CANCELLED


def _next_batch(
    calls: Iterable[tuple[Any, ...]],
    func: Callable[..., Any],
    kwargs: dict[str, Any],
    scheduler: str | None,
    size: int,
    options: pb.JobSpec | None = None,
) -> list[pb.JobSpec]:
    batch: list[pb.JobSpec] = []
    total = 0
    for args in itertools.islice(calls, size):
        spec = _convert.pickled_call_spec(func, args, kwargs, scheduler)
        if options is not None:
            spec.MergeFrom(options)  # the batch's name, time limit and retry policy
        batch.append(spec)
        total += len(spec.pickled_call.payload)
        if total >= MAX_BATCH_BYTES:
            break
    return batch
