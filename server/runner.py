"""Running recorded jobs: start them, hold them to their time limit, cancel and end them.

:class:`Runner` owns each job's :class:`JobRuntime` while this server runs it
(its task, its progress, why it was cancelled) and every change of a job's
state made here. A job is recorded before it starts (:mod:`server.recording`), and its end is recorded
before anyone waiting for it is woken (how each is written is the replicas
strategy's business, :mod:`server.replicas`). What a job's code raised
becomes its error by the rule in :mod:`server.job_errors`. A job that uses
other jobs' results waits for them, still queued, before it starts
(:mod:`server.dependencies`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from server import job_errors
from server.admission import Admission, Admitted
from server.dependencies import UpstreamFailed
from server.errors import JobNotFound
from server.execution import Executors
from server.jobs import JobError, JobKind, JobRecord, JobState, JobTable
from server.logwriter import log_event
from server.metrics import Metrics
from server.pools import Occupancy
from server.progress import Progress
from server.result_checks import ResultCheck
from server.results import EncodedResult
from server.tracing import OFF, Tracing, trace_id

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class JobRuntime:
    """What the runner holds for a job it runs, besides its record."""

    scheduler: str
    # What the job holds of the local pools, until its calls really return.
    occupancy: Occupancy = dataclasses.field(default_factory=Occupancy)
    done: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    # Set once the job's coroutine has unwound (a cancelled job's calls that
    # run on are counted abandoned by then).
    unwound: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None
    progress: Progress = dataclasses.field(default_factory=Progress)
    cancel_reason: str = ""
    # A Run's job on this server's own store, not started yet: its caller's
    # task runs it (see Runner.run_in_caller).
    start: Coroutine[Any, Any, None] | None = None
    # While a Run's job runs in its caller's task: the reason to cancel it
    # with when that caller goes away.
    caller_gone: Callable[[], str] | None = None
    # Its span, from acceptance to end, when tracing is on (server.tracing).
    span: Any = None

    @property
    def running(self) -> bool:
        """Whether its task has not finished yet."""
        return self.task is not None and not self.task.done()

    def stop(self, reason: str) -> None:
        """Cancel the job's task, for ``reason`` (not its caller's leaving)."""
        if self.task is not None:
            self.cancel_reason = self.cancel_reason or reason
            self.task.cancel()


class Runner:
    """Records, starts and ends jobs; see the module docstring.

    Args:
        store: The job records.
        admission: The gate's counts, updated as jobs are recorded and end.
        replicas: How records are written and results kept (alone or shared).
        pools: The pools of the core (raises Unavailable while starting or stopping).
        metrics: Counted as jobs are submitted and end.
        on_end: Called with a job's id once its end is recorded (waiters wake).
        succeeded: Awaited with ``(job id, value, encoded)`` as a job's work
            returns, before it is marked succeeded (``encoded``: the value as
            its check encoded it, or ``None``, see :mod:`server.result_checks`);
            returns a callable to run once it is.
        inputs: What the jobs that use other jobs' results need
            (:class:`server.dependencies.Dependencies`: ``hold``, ``let_go``
            and ``work``), or ``None``.
        tracing: Each job's span, when on (:mod:`server.tracing`).
    """

    def __init__(
        self,
        store: JobTable,
        admission: Admission,
        replicas: Any,
        pools: Callable[[], Executors],
        metrics: Metrics,
        on_end: Callable[[str], None],
        succeeded: Callable[[str, Any, EncodedResult | None], Awaitable[Callable[[], None] | None]],
        inputs: Any = None,
        tracing: Tracing = OFF,
    ) -> None:
        self.store = store
        self.admission = admission
        self.replicas = replicas
        self.pools = pools
        self.metrics = metrics
        self.on_end = on_end
        self.succeeded = succeeded
        self.inputs = inputs
        self.tracing = tracing
        self.runtimes: dict[str, JobRuntime] = {}

    def start(
        self, executors: Executors, record: JobRecord, job: Admitted, in_caller: bool = False
    ) -> None:
        """Start a recorded, reserved job in a task of its own, or, ``in_caller``,
        leave it for :meth:`run_in_caller`.

        Its span (tracing on) begins here, in the accepting RPC's context."""
        runtime = self.runtimes[record.job_id] = JobRuntime(
            scheduler=job.scheduler, occupancy=Occupancy(record.owner)
        )
        if self.tracing.enabled:
            runtime.span = self.tracing.job_started(record, job.target)
        limit = self.admission.time_limit(job.request)
        if job.work.inputs and self.inputs is not None:
            self.inputs.hold(record.job_id, job.work.inputs)
        work = self._run_job(executors, record.job_id, job, limit)
        if in_caller:
            runtime.start = work
        else:
            runtime.task = asyncio.create_task(work)

    async def run_in_caller(self, job_id: str, why_cancelled: Callable[[], str]) -> None:
        """Run a Run's job in its caller's task, or wait for it to end.

        Run in its caller's task rather than a task of its own (one task and
        two turns of the event loop fewer per call), the task is the job's
        while it runs: cancelling the job (CancelJob, a time limit, shutdown)
        cancels the task, the job ends, and the call goes on to answer. The
        caller's own cancellation (its RPC went away) cancels the job with
        ``why_cancelled()`` and propagates.
        """
        runtime = self.runtimes.get(job_id)
        if runtime is None:  # an earlier submission with this request_id, since forgotten
            return
        job, runtime.start = runtime.start, None
        if job is None:
            try:
                await runtime.done.wait()
            except asyncio.CancelledError:
                self.cancel(job_id, why_cancelled())
                raise
            return
        task = asyncio.current_task()
        assert task is not None
        runtime.task, runtime.caller_gone = task, why_cancelled
        try:
            await job
        finally:
            runtime.task = runtime.caller_gone = None
        uncancel = getattr(task, "uncancel", None)  # Python 3.11+
        # (cancelling() is 3.11+ too, and called only when uncancel is there)
        if runtime.cancel_reason and uncancel is not None and task.cancelling():  # type: ignore[attr-defined]
            uncancel()  # the job's cancellation, handled: the call is not cancelled
        # Its caller is told of its end only once the end is stored.
        await runtime.done.wait()

    # -- running -----------------------------------------------------------

    async def _run_job(
        self, executors: Executors, job_id: str, job: Admitted, time_limit: float | None
    ) -> None:
        runtime = self.runtimes[job_id]
        if job.work.inputs:
            ready = None
            try:
                ready = await self._with_inputs(job_id, job, runtime)
            finally:
                if ready is None:  # it ended (or its Run's caller left) while it waited
                    runtime.unwound.set()
            if ready is None:
                return
            job = ready
        # Written only if the job is still running a moment later: a short
        # job's end is its first write after it was accepted. (Other
        # replicas, which read the shared store, see it at once.)
        record = self.store.update_soon(
            job_id,
            delay=self.replicas.running_write_delay,
            state=JobState.RUNNING,
            start_time=time.time(),
        )
        runtime = self.runtimes[job_id]
        # A job starts as soon as it is accepted: one line says both.
        log_event(
            logger,
            "job=%s event=started kind=%s target=%s scheduler=%s owner=%s%s",
            job_id,
            record.kind.value,
            job.target,
            job.scheduler,
            record.owner,
            _traced(runtime.span),
        )
        try:
            await self._run_work(executors, job_id, job, runtime, time_limit)
        finally:
            runtime.unwound.set()

    async def _run_work(
        self,
        executors: Executors,
        job_id: str,
        job: Admitted,
        runtime: JobRuntime,
        time_limit: float | None,
    ) -> None:
        # A result that cannot be held fails its job, checked where it was made.
        request = job.request
        check = ResultCheck(request.result_format, request.kind is JobKind.FUNCTION)
        try:
            key = task_key(job.target, job_id)
            running = job_errors.contain(
                executors.run(
                    job.work, job.scheduler, key, runtime.progress, runtime.occupancy, check
                )
            )
            if time_limit is None:
                # Awaited in this task: cancelling the task cancels the work.
                value = await running
            else:
                value = await self._within(running, time_limit)
        except asyncio.CancelledError:
            if self._cancelled(job_id, runtime):
                raise
            return
        except _TimedOut as exc:
            error = JobError(type="TimeoutError", message=str(exc))
            self.finish(job_id, JobState.FAILED, error=error)
            return
        except BaseException as exc:
            self.finish(job_id, JobState.FAILED, error=job_errors.to_job_error(exc))
            if not isinstance(exc, Exception):
                raise  # not ours to stop: the job ends, and it goes on up
            return
        if self._ended(job_id):
            return
        try:
            then = await self.succeeded(job_id, value, check.encoded)
        except Exception as exc:  # holding its result failed: the job fails, never hangs
            logger.warning(
                "job=%s its result could not be held: %s%s", job_id, exc, _traced(runtime.span)
            )
            self.finish(job_id, JobState.FAILED, error=job_errors.to_job_error(exc))
            return
        if self._ended(job_id):
            return
        self.finish(job_id, JobState.SUCCEEDED, result_available=True)
        if then is not None:
            then()

    def _cancelled(self, job_id: str, runtime: JobRuntime) -> bool:
        """End a job whose task was cancelled; returns whether the cancellation goes on up.

        It does when the job runs in its caller's task and that caller went
        away: the cancellation is the caller's.
        """
        reason = runtime.cancel_reason
        if not reason and runtime.caller_gone is not None:
            self.finish(job_id, JobState.CANCELLED, cancel_reason=runtime.caller_gone())
            return True
        self.finish(job_id, JobState.CANCELLED, cancel_reason=reason or "cancelled")
        return False

    async def _with_inputs(
        self, job_id: str, job: Admitted, runtime: JobRuntime
    ) -> Admitted | None:
        """The job with its inputs in place, once the jobs it uses have ended
        (``None``: it ended instead, failed or cancelled while it waited)."""
        try:
            work = await self.inputs.work(job)
        except asyncio.CancelledError:
            if self._cancelled(job_id, runtime):
                raise
            return None
        except Exception as exc:  # an input failed, or the work could not be made
            error = job_errors.to_job_error(exc)
            if isinstance(exc, UpstreamFailed):
                error = JobError(type="UpstreamFailed", message=str(exc))
            self.finish(job_id, JobState.FAILED, error=error)
            return None
        return dataclasses.replace(job, work=work)

    @staticmethod
    async def _within(running: Awaitable[Any], time_limit: float) -> Any:
        """``await running``, cancelled past ``time_limit`` seconds (then :class:`_TimedOut`)."""
        execution = asyncio.ensure_future(running)
        try:
            done, _ = await asyncio.wait({execution}, timeout=time_limit)
        except asyncio.CancelledError:
            execution.cancel()
            await asyncio.gather(execution, return_exceptions=True)
            raise
        if not done:
            execution.cancel()
            await asyncio.gather(execution, return_exceptions=True)
            raise _TimedOut(f"the job ran past its time limit of {time_limit:g}s and was cancelled")
        return execution.result()

    # -- ending ------------------------------------------------------------

    def record(self, job_id: str) -> JobRecord:
        """The record of a job this server accepted or re-ran (never waits on the store)."""
        record = self.store.cached(job_id)
        if record is None:
            raise JobNotFound(resource_name=job_id)
        return record

    def _ended(self, job_id: str) -> bool:
        """Whether the job ended already (or its end is being written)."""
        return self.record(job_id).state.finished or self.replicas.ending(job_id)

    def finish(self, job_id: str, state: JobState, **changes: Any) -> JobRecord:
        """End a job (unless it ended already); returns its record as changed here.

        Those waiting for it are woken once the replicas strategy has its end
        stored (:meth:`server.replicas.Alone.record_end`).
        """
        if self._ended(job_id):
            return self.record(job_id)
        now = time.time()
        record = self.replicas.record_end(
            job_id, now, lambda stored: self._wake(job_id, stored, now), state=state, **changes
        )
        # It counts against its caller's limits until its work has really
        # stopped: a cancelled job's thread may run on.
        owner = record.owner
        if record.depends_on and self.inputs is not None:
            self.inputs.let_go(job_id, record.depends_on)
        runtime = self.runtimes.get(job_id)
        if runtime is None:
            self.admission.finished(owner)
        else:
            runtime.occupancy.when_stopped(lambda: self.admission.finished(owner))
        return record

    def _wake(self, job_id: str, record: JobRecord, now: float) -> None:
        """Wake those waiting for a job whose end is stored, and count and log its end.

        A stored record that is unfinished is another replica's: it adopted
        the job (this one's lease ran out), and the end here was not
        recorded. The job is that replica's from now on: its runtime here is
        dropped (waiters follow it in the store), and no end is counted.
        """
        if not record.state.finished:
            runtime = self.runtimes.pop(job_id, None)
            if runtime is not None:
                runtime.done.set()
                self._end_span(runtime, record, now)
            self.on_end(job_id)
            return
        runtime = self.runtimes.get(job_id)
        traced = ""
        if runtime is not None:
            runtime.done.set()
            traced = _traced(runtime.span)
            self._end_span(runtime, record, now)
        self.on_end(job_id)
        duration = None if record.start_time is None else now - record.start_time
        self.metrics.job_finished(record.state.value, record.scheduler, duration)
        log_event(
            logger,
            "job=%s event=finished state=%s scheduler=%s duration=%.6f%s%s",
            job_id,
            record.state.value,
            record.scheduler,
            duration or 0.0,
            f" error={record.error.type}" if record.error else "",
            traced,
        )

    def _end_span(self, runtime: JobRuntime, record: JobRecord, now: float) -> None:
        span, runtime.span = runtime.span, None
        if span is not None:
            self.tracing.job_ended(span, record, now)

    def cancel(self, job_id: str, reason: str) -> JobRecord:
        """Cancel a job this server runs."""
        runtime = self.runtimes.get(job_id)
        record = self.finish(job_id, JobState.CANCELLED, cancel_reason=reason)
        if runtime is not None:
            runtime.stop(reason)
        return record

    async def cancel_and_wait(self, job_id: str, reason: str) -> bool:
        """Cancel a job this server runs, and wait until its end is stored.

        Returns:
            Whether this call ended it (``False``: it had ended already).
        """
        runtime = self.runtimes[job_id]
        ended = self._ended(job_id)
        if not ended:
            self.cancel(job_id, reason)
        await runtime.done.wait()
        if runtime.task is not None or runtime.start is None:
            await runtime.unwound.wait()  # (a Run's job not started yet never unwinds)
        return not ended

    def running(self) -> list[str]:
        """The ids of the jobs whose task has not finished."""
        return [job_id for job_id, rt in self.runtimes.items() if rt.running]

    def cancel_all(self, reason: str) -> int:
        """Cancel every unfinished job with ``reason``; returns how many."""
        running = self.running()
        for job_id in running:
            self.cancel(job_id, reason)
        if running:
            logger.warning("cancelled %d unfinished jobs: %s", len(running), reason)
        return len(running)

    def fail_on_cluster(self, message: str) -> None:
        """Fail the jobs running on the cluster (its scheduler was lost)."""
        for job_id, runtime in list(self.runtimes.items()):
            if runtime.scheduler == "distributed" and runtime.running:
                error = JobError(type="SchedulerLost", message=message)
                self.finish(job_id, JobState.FAILED, error=error)
                runtime.stop(message)

    def tasks(self) -> list[asyncio.Task]:
        """Every job task this runner started (finished ones included)."""
        return [rt.task for rt in self.runtimes.values() if rt.task is not None]

    async def wait_idle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every running job to finish.

        Returns:
            Whether no job is left running.
        """
        pending = [self.runtimes[job_id].task for job_id in self.running()]
        if pending:
            logger.info("waiting up to %gs for %d running jobs", timeout, len(pending))
            await asyncio.wait(pending, timeout=timeout)  # type: ignore[type-var]
        return not self.running()

    def forget(self, job_ids: set[str]) -> None:
        """Drop the runtimes of expired records."""
        for job_id in job_ids:
            self.runtimes.pop(job_id, None)


class _TimedOut(Exception):
    """A job ran past its time limit (the message says which)."""


def _traced(span: Any) -> str:
    """What a job's log lines add for its span: `` trace_id=<32 hex digits>``, or nothing."""
    return "" if span is None else f" trace_id={trace_id(span)}"


def task_key(target: str, job_id: str) -> str:
    """The key of a job's task on the cluster (every replica derives the same one)."""
    return f"{target}-{job_id}"
