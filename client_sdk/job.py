"""Jobs as futures: :class:`Job` for the blocking client (a real
:class:`concurrent.futures.Future`) and the state both job types share.

A job is watched from the moment it is submitted: the client keeps one
``WaitJob`` long poll open per unfinished job (up to a window, the rest
queue), and settles the job's future when the poll returns it finished. So
``done()`` and ``cancelled()`` answer from local state, ``result(timeout)``
waits on that state without asking the server again, and done-callbacks fire
once, when the job finishes, with no polling.

A result small enough to come inside the WaitJob answer (1 MiB by default) is
in hand when the job is done. A larger one stays on the server until the
first ``result()`` downloads it (``GetJobResult``, resumed if cut off); a job
this client submitted then releases it on the server.

A job never reaches into its client: the client hands it a :class:`JobLink`
(how to run an operation, how to watch, where to run done-callbacks), and
the operations it runs on its own (its record, cancelling it, its result)
are plain functions of :mod:`client_sdk._ops`.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any, cast

from client_sdk import _convert
from client_sdk._ops import jobs, results
from client_sdk._results import StreamedResult
from client_sdk._sansio import Op, blocking
from client_sdk.errors import JobTimeout
from client_sdk.types import JobInfo, JobState, JobUpdate, Progress

logger = logging.getLogger(__name__)

_MISSING = object()

#: A finished job's state as :attr:`distributed.Future.status` says it.
_DASK_STATUS = {
    JobState.SUCCEEDED: "finished",
    JobState.FAILED: "error",
    JobState.CANCELLED: "cancelled",
}

#: The one caller of a server without credentials: every job there is the caller's own.
ANONYMOUS_OWNER = "anonymous"


@dataclasses.dataclass(frozen=True)
class JobLink:
    """What a job needs of the client that made it; the client hands it over.

    Attributes:
        drive: Runs an operation through the client's calls and returns its
            value (the asynchronous client: an awaitable of it).
        watch: The client's ``watch(job_id, timeout)``.
        dispatch: Runs a done-callback ``fn(job)`` where the client runs them
            (the blocking client: on its callback thread, not gRPC's).
    """

    drive: Callable[[Op[Any]], Any]
    watch: Callable[[str, float | None], Any]
    dispatch: Callable[[Callable[[Any], object], Any], None]


class JobBase:
    """What :class:`Job` and :class:`client_sdk.AsyncJob` share.

    Args:
        link: What the job needs of its client.
        info: The job's record when the client learned of it.
        owned: Submitted by this client: free a streamed result once read.
        trust: Load the job's pickles (result, exception) even though this
            client did not submit it.

    Attributes:
        job_id: The job's id on the service.
        trusted: Whether the job's pickles are loaded here: it was submitted
            through this client, attached with ``trust=True``, or belongs to
            ``anonymous`` (a server without credentials has no other caller). Otherwise
            a failed job raises :class:`~client_sdk.JobFailed` (type, message,
            traceback text) and a pickled result raises
            :class:`~client_sdk.UntrustedResult`; JSON results come as usual.
    """

    def __init__(
        self, link: JobLink, info: JobInfo, owned: bool = True, trust: bool = False
    ) -> None:
        self._link = link
        self.job_id = info.job_id
        self._info = info
        self._owned = owned
        self.trusted = owned or trust or info.owner == ANONYMOUS_OWNER
        self._downloaded: Any = _MISSING

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.job_id}: {self._info.state.value}>"

    def done(self) -> bool:  # pragma: no cover - both subclasses override
        """Whether the job has finished here."""
        raise NotImplementedError

    def cancelled(self) -> bool:  # pragma: no cover - both subclasses override
        """Whether the job was cancelled."""
        raise NotImplementedError

    def _drive(self, op: Op[Any]) -> Any:
        return self._link.drive(op)

    def info(self) -> Op[JobInfo]:
        """The job's full record (asks the server unless the job is done here)."""
        if not self.done():
            self._info = yield from jobs.record(self.job_id)
        return self._info

    @property
    def status(self) -> str:
        """Where the job is as far as this client knows, in Dask's words.

        The strings of :attr:`distributed.Future.status`: ``"pending"``
        until the job ends (queued, running, or waiting for its inputs),
        then ``"finished"``, ``"error"`` or ``"cancelled"``. It asks nothing
        of the server: the client watches every job it hands out and learns
        of its end as it happens. :meth:`state` asks the server for the
        service's own, finer, state.
        """
        if not self.done():
            return "pending"
        return _DASK_STATUS.get(self._info.state, "error")

    @property
    def key(self) -> str:
        """The job's id, where Dask code reads a future's ``key``."""
        return self.job_id

    def state(self) -> Op[JobState]:
        """The job's state: queued, running, succeeded, failed or cancelled.

        Asks the server unless the job is done here; the server may report a
        job finished a moment before :meth:`done` turns true.
        """
        info = yield from JobBase.info(self)
        return info.state

    def running(self) -> Op[bool]:
        """Whether the job is running on its scheduler now (asks the server)."""
        state = yield from JobBase.state(self)
        return state is JobState.RUNNING

    def cancel(self, reason: str = "") -> Op[bool]:
        """Cancel the job, queued or running.

        Unlike :meth:`concurrent.futures.Future.cancel`, a running job can be
        cancelled: the server cancels its tasks.

        Args:
            reason: Recorded in the job's ``cancel_reason``.

        Returns:
            Whether the job is cancelled now (``False``: it had already
            succeeded or failed).
        """
        if not self.done():
            info = yield from jobs.cancel_job(self.job_id, reason)
            if info.state is JobState.CANCELLED:
                self._settle(info, None, _convert.job_exception(info, trusted=self.trusted))
        return self.cancelled()

    def _download(self, value: Any) -> Op[Any]:
        # The value itself, once a result left on the server has come.
        if not isinstance(value, StreamedResult):
            return value
        if self._downloaded is _MISSING:
            self._downloaded = yield from results.download(
                self.job_id, self._owned, trusted=self.trusted, owner=self._info.owner
            )
        return self._downloaded

    def release(self) -> Op[bool]:
        """Free the job's result on the server now; see :meth:`ComputeClient.release`."""
        return (yield from results.release(self.job_id))

    def _settle(self, info: JobInfo, value: Any, error: BaseException | None) -> None:
        """Settle the job's future: its value, or ``error``."""
        raise NotImplementedError


class Job(JobBase, concurrent.futures.Future[Any]):
    """A submitted job: a :class:`concurrent.futures.Future` of its value.

    ``result``, ``exception``, ``done``, ``cancelled`` and
    ``add_done_callback`` behave as on any future, so
    ``concurrent.futures.wait``, ``as_completed`` and ``asyncio.wrap_future``
    work with jobs. Done-callbacks run on the client's callback thread, not
    on gRPC's. ``cancel``, ``running`` and ``state`` ask the server; ``status`` is
    Dask's string, from local state.

    Attributes:
        job_id: The job's id on the service.
    """

    def __init__(
        self, link: JobLink, info: JobInfo, owned: bool = True, trust: bool = False
    ) -> None:
        JobBase.__init__(self, link, info, owned, trust)
        concurrent.futures.Future.__init__(self)
        self._settle_lock = threading.Lock()
        self._download_lock = threading.Lock()

    # Each stands in for the operation of its name and returns its value: where

    # that is not Any, the override's type is not the base's generator ([assignment]).
    info = blocking(JobBase.info)  # type: ignore[assignment]
    state = blocking(JobBase.state)  # type: ignore[assignment]
    running = blocking(JobBase.running)  # type: ignore[assignment]
    cancel = blocking(JobBase.cancel)  # type: ignore[assignment]
    release = blocking(JobBase.release)  # type: ignore[assignment]

    def done(self) -> bool:
        """Whether the job has finished (succeeded, failed or was cancelled)."""
        return concurrent.futures.Future.done(self)

    def cancelled(self) -> bool:
        """Whether the job was cancelled."""
        return concurrent.futures.Future.cancelled(self)

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the job and return its value, or raise what it raised.

        Args:
            timeout: Seconds to wait; ``None`` waits as long as it takes.

        Raises:
            JobTimeout: ``timeout`` passed first; the job goes on.
            JobCancelled: The job was cancelled.
            JobFailed: The job raised an exception that cannot be rebuilt here.
            Exception: Whatever the job raised.
        """
        self._wait(timeout)
        value = concurrent.futures.Future.result(self, 0)
        with self._download_lock:  # a large result comes once, when first asked for
            return self._drive(self._download(value))

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Wait for the job; the exception it raised, or ``None`` if it succeeded.

        Raises:
            JobTimeout: ``timeout`` passed first.
            JobCancelled: The job was cancelled.
        """
        self._wait(timeout)
        return concurrent.futures.Future.exception(self, 0)

    def progress(self) -> Progress:
        """The job's Dask tasks done out of total now, from its scheduler's own state.

        ``Progress(0, 0)`` while the total is not known yet (a queued job);
        a finished job reports all of its tasks done. See :meth:`watch` to
        follow it as it changes.
        """
        updates = self._link.watch(self.job_id, None)
        try:
            return cast(Progress, next(updates).progress)  # (the link's watch is either client's)
        finally:
            updates.close()  # closes the stream

    def watch(self, timeout: float | None = None) -> Iterator[JobUpdate]:
        """Follow the job as it runs; see :meth:`client_sdk.ComputeClient.watch`.

        Example::

            for update in job.watch():
                print(f"{update.progress.tasks_done}/{update.progress.tasks_total}")
        """
        return cast("Iterator[JobUpdate]", self._link.watch(self.job_id, timeout))

    def add_done_callback(self, fn: Callable[[Job], object]) -> None:
        """Call ``fn(job)`` once, when the job finishes (at once if it has).

        The call happens on the client's callback thread; an exception in
        ``fn`` is logged and otherwise ignored, as with any future.
        """
        if self.done():
            # fn takes a Job, which is the future it is given.
            concurrent.futures.Future.add_done_callback(self, fn)  # type: ignore[arg-type]
        else:
            concurrent.futures.Future.add_done_callback(
                self, lambda job: self._link.dispatch(fn, job)
            )

    def _wait(self, timeout: float | None) -> None:
        try:
            # Future.exception waits, and returns (not raises) the job's error.
            concurrent.futures.Future.exception(self, timeout)
        except concurrent.futures.CancelledError as exc:
            raise _convert.job_exception(self._info, trusted=self.trusted) from exc
        except concurrent.futures.TimeoutError as exc:
            raise JobTimeout(
                f"job {self.job_id} did not finish within {timeout:g}s; it goes on"
            ) from exc

    def _settle(self, info: JobInfo, value: Any, error: BaseException | None) -> None:
        with self._settle_lock:
            if self.done():
                return
            self._info = info
            if info.state is JobState.CANCELLED:
                concurrent.futures.Future.cancel(self)
                self.set_running_or_notify_cancel()  # wakes concurrent.futures.wait
            elif error is None:
                self.set_result(value)
            else:
                self.set_exception(error)

    def _lose(self, error: BaseException) -> None:
        # The client can no longer learn how the job ends (closed, or the
        # server stopped answering): waiters get `error` instead of hanging.
        with self._settle_lock:
            if not self.done():
                self.set_exception(error)
