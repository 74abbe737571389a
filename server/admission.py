"""The one gate every job passes: policy, permissions, limits, idempotency, validation.

Whatever brings a job (``Run``, ``SubmitJob``, ``SubmitJobs``, a re-run after
a restart, adoption from a replica that stopped), :class:`Admission` decides
whether it may run, with the caller's *current* permissions and the server's
*current* policy, before any of its payload is loaded (loading a pickle runs
its code), and whether the jobs it uses as inputs are the caller's and still
held (:mod:`server.dependencies`). It owns the counts of unfinished jobs that the limits are checked
against, and the map of idempotency keys to the jobs they made.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence

from server import results
from server.auth import Authenticator, Caller
from server.config import SCHEDULERS, Settings
from server.errors import (
    RETRY_DELAY,
    InvalidArgument,
    JobNotFound,
    PermissionDenied,
    ResourceExhausted,
    ServiceError,
    Unavailable,
)
from server.execution import Work
from server.jobs import JobKind, JobRecord, JobTable
from server.requests import JobRequest, Preparer

logger = logging.getLogger(__name__)

#: Most jobs in one SubmitJobs call.
MAX_BATCH = 10_000


@dataclasses.dataclass(frozen=True)
class Admitted:
    """A job that passed the gate: its request, its caller and its work."""

    request: JobRequest
    caller: Caller
    work: Work
    target: str
    scheduler: str


class Admission:
    """The gate; see the module docstring.

    Args:
        settings: The limits and the default scheduler.
        store: The job records (idempotency keys from before a restart, or
            from other replicas, are looked up there).
        preparer: Turns an admitted request into work.
        cluster_ok: Whether the Dask scheduler answers now.
        outage_message: What to say when it does not.
        callers: The caller named ``owner`` with its current permissions, or
            ``None`` if the server no longer knows it.
        pool_refusal: Why a local scheduler's pool takes no new job now, or
            ``None`` (see :meth:`server.pools.Gate.refusal`).
        check_inputs: Refuses the jobs a request uses as inputs if the caller
            may not use them or their results are gone
            (:meth:`server.dependencies.Dependencies.check`).
    """

    def __init__(
        self,
        settings: Settings,
        store: JobTable,
        preparer: Preparer,
        cluster_ok: Callable[[], bool],
        outage_message: Callable[[], str],
        callers: Callable[[str], Caller | None],
        pool_refusal: Callable[[str], str | None] = lambda scheduler: None,
        check_inputs: Callable[[Sequence[str], Caller], Awaitable[None]] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.preparer = preparer
        self.cluster_ok = cluster_ok
        self.outage_message = outage_message
        self.callers = callers
        self.pool_refusal = pool_refusal
        self.check_inputs = check_inputs
        #: Unfinished jobs, in all and by owner, for the limits.
        self.pending = 0
        self.pending_by_owner: dict[str, int] = {}
        self._by_request_id: dict[tuple[str, str], str] = {}
        # Jobs with an idempotency key whose record is being written.
        self._inserting: dict[str, JobRecord] = {}

    # -- the gate ----------------------------------------------------------

    async def admit(self, request: JobRequest, caller: Caller) -> Admitted | JobRecord:
        """Pass one request through the gate.

        Returns:
            The record of the job an earlier submission with the same
            idempotency key made, or the admitted job.

        Raises:
            PermissionDenied, ResourceExhausted, InvalidArgument,
            FunctionNotFound, Unavailable: it may not run (nothing is kept).
        """
        self.authorize(request, caller)
        existing = await self.existing(request, caller)
        if existing is not None:
            return existing
        self.check_limits(caller, 1)
        admitted = await self._validate(request, caller)
        # The same key may have landed here meanwhile.
        existing = await self.existing(request, caller, ask_store=False)
        if existing is not None:
            return existing
        self.check_limits(caller, 1)
        return admitted

    async def admit_many(
        self, requests: Sequence[JobRequest], caller: Caller
    ) -> list[Admitted | JobRecord]:
        """Pass a batch through the gate: all of it, or nothing (see :meth:`admit`).

        A request whose idempotency key an earlier one of the batch carries
        is answered with that one's :class:`Admitted` (the same object):
        :meth:`server.recording.Recording.accept` makes one job of it.

        Raises:
            InvalidArgument: The batch is empty, larger than :data:`MAX_BATCH`,
                or a job in it is invalid (the message says which, by index).
        """
        if not requests:
            raise InvalidArgument(
                "jobs is empty: submit at least one job", field="jobs", reason="BATCH_EMPTY"
            )
        if len(requests) > MAX_BATCH:
            raise InvalidArgument(
                f"at most {MAX_BATCH} jobs per batch, got {len(requests)}",
                field="jobs",
                reason="BATCH_TOO_LARGE",
                metadata={"limit": MAX_BATCH, "count": len(requests)},
            )
        # The keys unknown here, looked up in a durable store at once.
        stored: dict[str, JobRecord] = {}
        unknown = [
            r.request_id
            for r in requests
            if r.request_id and (caller.name, r.request_id) not in self._by_request_id
        ]
        if unknown and self.store.durable:
            stored = await self.store.find_requests(caller.name, unknown)
        admitted: list[Admitted | JobRecord] = []
        # A key repeated within the batch: its first job answers for every repeat.
        first: dict[str, Admitted] = {}
        for index, request in enumerate(requests):
            try:
                self.authorize(request, caller)
                repeat = first.get(request.request_id) if request.request_id else None
                if repeat is not None:
                    admitted.append(repeat)
                    continue
                existing = await self.existing(request, caller, ask_store=False)
                existing = existing or stored.get(request.request_id)
                if existing is None:
                    job = await self._validate(request, caller)
                    # The same key may have landed here meanwhile (another call).
                    existing = await self.existing(request, caller, ask_store=False)
                if existing is not None:
                    admitted.append(existing)
                    continue
                if request.request_id:
                    first[request.request_id] = job
                admitted.append(job)
            except ServiceError as exc:
                raise type(exc)(f"jobs[{index}]: {exc}") from exc
        fresh = {id(a) for a in admitted if isinstance(a, Admitted)}
        self.check_limits(caller, len(fresh))
        return admitted

    async def readmit(self, owner: str, request: JobRequest) -> Admitted:
        """Pass a stored request through the gate again, as its owner is now.

        For a job re-run after a restart or adopted from another replica: its
        owner's permissions and the server's policy may have changed since it
        was accepted (a token revoked, ``--no-pickled-work``), and a job its
        owner could not submit now does not run. Limits are not checked: the
        job was accepted when they were.

        Raises:
            PermissionDenied: Its owner is unknown now, or lacks the permission.
            InvalidArgument, FunctionNotFound, Unavailable: It cannot run.
        """
        caller = self.callers(owner)
        if caller is None:
            raise PermissionDenied(
                f"its owner {owner!r} is no longer known to the server",
                reason="OWNER_UNKNOWN",
                metadata={"owner": owner},
            )
        self.authorize(request, caller)
        return await self._validate(request, caller)

    @staticmethod
    def authorize(request: JobRequest, caller: Caller) -> None:
        """Raise :class:`PermissionDenied` unless ``caller`` may send this kind of work.

        Checked before anything is unpickled: loading a payload runs its code.
        """
        if request.kind is JobKind.FUNCTION:
            if not caller.can("run"):
                raise PermissionDenied(
                    f"caller {caller.name!r} lacks the 'run' permission",
                    reason="PERMISSION_RUN_REQUIRED",
                    metadata={"caller": caller.name, "permission": "run"},
                )
        elif not caller.can("code"):
            raise PermissionDenied(
                f"caller {caller.name!r} may call named functions only: sending Python code "
                "(pickled callables, Dask graphs) needs the 'code' permission",
                reason="PERMISSION_CODE_REQUIRED",
                metadata={"caller": caller.name, "permission": "code"},
            )

    def check_limits(self, caller: Caller, adding: int) -> None:
        """Raise :class:`ResourceExhausted` if ``adding`` jobs would pass a limit."""
        s = self.settings
        if self.pending + adding > s.max_pending_jobs:
            raise ResourceExhausted(
                f"the server has {self.pending} unfinished jobs and takes at most "
                f"{s.max_pending_jobs} (max_pending_jobs); retry when some finish",
                reason="SERVER_JOB_LIMIT",
                metadata={
                    "limit_name": "max_pending_jobs",
                    "limit": s.max_pending_jobs,
                    "unfinished": self.pending,
                },
                retry_delay=RETRY_DELAY,
            )
        mine = self.pending_by_owner.get(caller.name, 0)
        if mine + adding > s.max_jobs_per_caller:
            raise ResourceExhausted(
                f"caller {caller.name!r} has {mine} unfinished jobs and may have at most "
                f"{s.max_jobs_per_caller} (max_jobs_per_caller); wait for some to finish",
                reason="CALLER_JOB_LIMIT",
                metadata={
                    "caller": caller.name,
                    "limit_name": "max_jobs_per_caller",
                    "limit": s.max_jobs_per_caller,
                    "unfinished": mine,
                },
                retry_delay=RETRY_DELAY,
            )

    def time_limit(self, request: JobRequest) -> float | None:
        """Seconds the job may run: the shorter of its own timeout and the server's limit."""
        limits = [t for t in (request.timeout, self.settings.max_job_seconds) if t]
        return min(limits) if limits else None

    async def _validate(self, request: JobRequest, caller: Caller) -> Admitted:
        scheduler = request.scheduler or self.settings.default_scheduler
        if scheduler not in SCHEDULERS:
            raise InvalidArgument(
                f"unknown scheduler {scheduler!r}; use one of {', '.join(SCHEDULERS)}",
                field="scheduler",
                reason="UNKNOWN_SCHEDULER",
                metadata={"scheduler": scheduler},
            )
        if request.result_format not in results.FORMATS:
            raise InvalidArgument(
                f"unknown result format {request.result_format!r}; "
                f"use one of {', '.join(results.FORMATS)}",
                field="result_format",
                reason="UNKNOWN_RESULT_FORMAT",
            )
        if len(request.name) > 256:
            raise InvalidArgument(
                "job name must be at most 256 characters",
                field="name",
                reason="NAME_TOO_LONG",
                metadata={"limit": 256},
            )
        if len(request.request_id) > 128:
            raise InvalidArgument(
                "request_id must be at most 128 characters",
                field="request_id",
                reason="REQUEST_ID_TOO_LONG",
                metadata={"limit": 128},
            )
        if request.timeout is not None and request.timeout < 0:
            raise InvalidArgument(
                "timeout must not be negative", field="timeout", reason="NEGATIVE_TIMEOUT"
            )
        if scheduler == "distributed" and not self.cluster_ok():
            raise Unavailable(self.outage_message())
        refused = self.pool_refusal(scheduler)
        if refused is not None:
            raise ResourceExhausted(
                refused,
                reason="POOL_ABANDONED_LIMIT",
                metadata={"scheduler": scheduler, "limit_name": "max_abandoned_threads"},
                retry_delay=RETRY_DELAY,
            )
        work, target = await self.preparer.prepare(request, caller, scheduler)
        if work.inputs and self.check_inputs is not None:
            await self.check_inputs(work.inputs, caller)
        return Admitted(request, caller, work, target, scheduler)

    # -- idempotency -------------------------------------------------------

    async def existing(
        self, request: JobRequest, caller: Caller, ask_store: bool = True
    ) -> JobRecord | None:
        """The job an earlier submission with this request's idempotency key made, if any.

        ``ask_store``: a key unknown here is looked up in a durable store too.
        """
        if not request.request_id:
            return None
        job_id = self._by_request_id.get((caller.name, request.request_id))
        if job_id is None:
            # A durable store remembers keys from before a restart (and, shared,
            # from other replicas); memory has nothing the map lacks.
            if not self.store.durable or not ask_store:
                return None
            return await self.store.find_request(caller.name, request.request_id)
        writing = self._inserting.get(job_id)
        if writing is not None:
            return writing  # its first submission is being written now
        try:
            return await self.store.get(job_id)
        except JobNotFound:  # expired: the key is free again
            self._by_request_id.pop((caller.name, request.request_id), None)
            return None

    def forget(self, job_ids: set[str]) -> None:
        """Free the idempotency keys of expired records."""
        self._by_request_id = {
            key: job_id for key, job_id in self._by_request_id.items() if job_id not in job_ids
        }

    # -- counting ----------------------------------------------------------

    def reserve(self, record: JobRecord) -> None:
        """Count a job as unfinished, and make its idempotency key known."""
        if record.request_id:
            self._by_request_id[(record.owner, record.request_id)] = record.job_id
            self._inserting[record.job_id] = record
        self.pending += 1
        self.pending_by_owner[record.owner] = self.pending_by_owner.get(record.owner, 0) + 1

    def recorded(self, job_id: str) -> None:
        """The record of a reserved job is stored: its key is answered from the store."""
        self._inserting.pop(job_id, None)

    def writing(self) -> bool:
        """Whether a record with an idempotency key is being written (for tests)."""
        return bool(self._inserting)

    def unreserve(self, record: JobRecord) -> None:
        """Undo :meth:`reserve` for a job that was not recorded after all."""
        self._inserting.pop(record.job_id, None)
        if self._by_request_id.get((record.owner, record.request_id)) == record.job_id:
            del self._by_request_id[(record.owner, record.request_id)]
        self.finished(record.owner)

    def finished(self, owner: str) -> None:
        """One unfinished job of ``owner`` fewer, against the limits."""
        self.pending -= 1
        left = self.pending_by_owner.get(owner, 1) - 1
        if left > 0:
            self.pending_by_owner[owner] = left
        else:
            self.pending_by_owner.pop(owner, None)


def policy_callers(settings: Settings) -> Callable[[str], Caller | None]:
    """The callers the policy of ``settings`` knows, as they are now (for ``readmit``)."""

    def named(owner: str) -> Caller | None:
        return Authenticator.from_settings(settings).caller_named(owner)

    return named
