"""Recording admitted jobs before they start: nobody is told of a job the store lacks.

:class:`Recording` takes the jobs that passed the gate
(:mod:`server.admission`), writes their records (one transaction for a
batch, one job for each idempotency key), and hands them to the runner
(:mod:`server.runner`) to start. A ``Run``'s job, whose caller is told only
of its end, may start before its record is written, where the replicas
strategy allows it: its insert then rides with its end in one write.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, cast

from server.admission import Admission, Admitted
from server.errors import Unavailable
from server.execution import Executors
from server.jobs import JobRecord, JobState, JobTable, NewJob, RequestKeyTaken, new_job_id
from server.metrics import Metrics
from server.requests import request_doc
from server.runner import Runner

logger = logging.getLogger(__name__)

#: Seconds within which the record of a job whose caller waits (a Run) is stored:
#: one that ends sooner is stored once, finished, with its end.
WAITED_WRITE_DELAY = 0.25


class Recording:
    """See the module docstring.

    Args:
        store: The job records.
        admission: The gate's counts (a job counts from when it is being written).
        replicas: Whether a Run's record may be written with its end.
        pools: The core's pools.
        metrics: Counted as jobs are submitted.
        runner: Starts the recorded jobs.
    """

    def __init__(
        self,
        store: JobTable,
        admission: Admission,
        replicas: Any,
        pools: Callable[[], Executors],
        metrics: Metrics,
        runner: Runner,
    ) -> None:
        self.store = store
        self.admission = admission
        self.replicas = replicas
        self.pools = pools
        self.metrics = metrics
        self.runner = runner

    async def accept(
        self,
        admitted: list[Admitted],
        abandoned: Callable[[], str] | None = None,
        waited: bool = False,
        retried: bool = False,
    ) -> list[JobRecord]:
        """Record admitted jobs (one write for the batch), then start them.

        ``abandoned`` gives the reason to cancel them with when the caller
        stops waiting before they are recorded (a ``Run`` whose caller left).

        A job is acknowledged only once its record is stored. While it is
        being written it already counts against the limits and its
        idempotency key answers a retry, so concurrent callers cannot slip
        past either. ``waited`` jobs (a ``Run``: the caller is told only of
        their end) may start before their record is written, where the
        replicas strategy allows it; their caller runs them (see :meth:`run_in_caller`).

        An :class:`Admitted` given more than once (a batch that repeats an
        idempotency key, see :meth:`server.admission.Admission.admit_many`)
        is one job: its record is returned at each of its places. If the
        store refuses a key because another replica stored a job with it since
        the gate looked (:class:`server.jobs.RequestKeyTaken`), that job is
        returned for it and the rest are accepted again (once: ``retried``).

        Raises:
            Unavailable: The job store could not record them (nothing started).
        """
        unique = list({id(job): job for job in admitted}.values())
        if len(unique) < len(admitted):
            records = await self.accept(unique, abandoned, waited, retried)
            by_job = {id(job): record for job, record in zip(unique, records, strict=True)}
            return [by_job[id(job)] for job in admitted]
        executors = self.pools()
        durable = self.store.durable
        entries = []
        for job in admitted:
            request = job.request
            record = JobRecord(
                job_id=new_job_id(),
                state=JobState.QUEUED,
                scheduler=job.scheduler,
                kind=request.kind,
                target=job.target,
                name=request.name,
                result_format=request.result_format,
                submit_time=time.time(),
                owner=job.caller.name,
                request_id=request.request_id,
                retryable=request.retryable,
                depends_on=job.work.inputs,
            )
            # A retryable job's request is kept until it ends, to re-run it after a restart.
            kept = request_doc(request) if request.retryable and durable else None
            entries.append(NewJob(record, kept))
            self.admission.reserve(record)
        if waited and self.replicas.defers_waited_records:
            try:
                later = self.store.insert_later(entries, WAITED_WRITE_DELAY)
            except Exception as exc:
                raise self._not_recorded(entries, exc) from exc
            self._launch(executors, later, admitted, in_caller=True)
            return later
        # Once written, the jobs start whatever happens to the caller meanwhile
        # (its RPC may be cancelled while the write is under way): a stored
        # job that never started would stay queued for ever.
        loop = asyncio.get_running_loop()
        started: asyncio.Future[list[JobRecord]] = loop.create_future()

        def start(written: asyncio.Future[list[JobRecord]]) -> None:
            error = written.exception()
            if isinstance(error, RequestKeyTaken) and not retried:
                # Another replica stored a job with one of these keys meanwhile:
                # that job answers for its key, and the others are accepted again.
                for entry in entries:
                    self.admission.unreserve(entry.record)
                again = asyncio.ensure_future(self._accept_taken(admitted))
                _RETRYING.add(again)  # (held until done: the loop holds tasks weakly)
                again.add_done_callback(_RETRYING.discard)
                again.add_done_callback(lambda done: _settle(started, done))
                return
            if error is not None:
                started.set_exception(self._not_recorded(entries, error))
                return
            stored = written.result()
            self._launch(executors, stored, admitted)
            started.set_result(stored)

        asyncio.wrap_future(self.store.insert_many(entries)).add_done_callback(start)
        try:
            return await asyncio.shield(started)
        except asyncio.CancelledError:
            if abandoned is not None:
                # Nobody will wait for these jobs: cancel them once they start.
                reason = abandoned()

                def cancel(done: asyncio.Future[list[JobRecord]]) -> None:
                    if not done.cancelled() and done.exception() is None:
                        for record in done.result():
                            self.runner.cancel(record.job_id, reason)

                started.add_done_callback(cancel)
            raise

    async def _accept_taken(self, admitted: list[Admitted]) -> list[JobRecord]:
        """:meth:`accept` again, after the store refused a key another replica took."""
        found: dict[tuple[str, str], JobRecord] = {}
        for owner in {job.caller.name for job in admitted}:
            keys = [j.request.request_id for j in admitted if j.caller.name == owner]
            stored = await self.store.find_requests(owner, [key for key in keys if key])
            found.update(((owner, key), record) for key, record in stored.items())
        rest = [j for j in admitted if (j.caller.name, j.request.request_id) not in found]
        accepted = iter(await self.accept(rest, retried=True) if rest else [])
        return [
            found.get((j.caller.name, j.request.request_id)) or next(accepted) for j in admitted
        ]

    def _not_recorded(self, entries: list[NewJob], error: BaseException) -> Unavailable:
        """Undo the reservations of jobs the store could not record; the error to answer."""
        for entry in entries:
            self.admission.unreserve(entry.record)
        return Unavailable(
            f"the job store could not record the job ({type(error).__name__}: {error}); "
            "nothing was started: retry",
            reason="STORE_UNAVAILABLE",
        )

    def _launch(
        self,
        executors: Executors,
        records: list[JobRecord],
        admitted: list[Admitted],
        in_caller: bool = False,
    ) -> None:
        for record, job in zip(records, admitted, strict=True):
            self.admission.recorded(record.job_id)
            self.runner.start(executors, record, job, in_caller)
            self.metrics.job_submitted(record.kind.value, job.scheduler)


#: Accepts re-run after a refused key (see Recording.accept), until they are done.
_RETRYING: set[asyncio.Future[Any]] = set()


def _settle(target: asyncio.Future[Any], done: asyncio.Future[Any]) -> None:
    """Give ``target`` the outcome of ``done``."""
    if target.done():
        return
    if done.cancelled():
        target.cancel()
    elif done.exception() is not None:
        target.set_exception(cast(BaseException, done.exception()))
    else:
        target.set_result(done.result())
