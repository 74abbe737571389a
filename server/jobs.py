"""Job records and the job table's interface: plain Python, no gRPC, no Dask, no SQL.

Owns what a job's record is (:class:`JobRecord`, :class:`NewJob`), the
:class:`JobTable` interface (all the rest of the server knows of where records
live, and which of its calls may wait on a database), and
:class:`MemoryJobTable`, the table of a server without a store. The durable
table is :class:`server.store.SqlJobTable`; paging is :mod:`server.paging`.
"""

from __future__ import annotations

import builtins
import concurrent.futures
import dataclasses
import enum
import secrets
import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from server.errors import InvalidArgument, JobNotFound
from server.paging import make_page_token, page_bounds

if TYPE_CHECKING:
    from server.store.registry import ReplicaRegistry


class JobState(str, enum.Enum):
    """Where a job is in its life."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """Whether the job has reached its final state."""
        return self in _FINISHED


_FINISHED = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


class JobKind(str, enum.Enum):
    """What kind of work a job carries."""

    FUNCTION = "function"
    PICKLED_CALL = "pickled_call"
    GRAPH = "graph"


@dataclasses.dataclass(frozen=True)
class JobError:
    """Why a job failed."""

    type: str
    message: str
    traceback: str = ""
    pickled_exception: bytes = b""


@dataclasses.dataclass(frozen=True)
class JobRecord:
    """A job's record, as the job table keeps it.

    Times are seconds since the epoch; ``None`` until they happen.
    """

    job_id: str
    state: JobState
    scheduler: str
    kind: JobKind
    target: str
    name: str = ""
    result_format: str = "auto"
    submit_time: float = 0.0
    start_time: float | None = None
    finish_time: float | None = None
    error: JobError | None = None
    cancel_reason: str = ""
    result_available: bool = False
    owner: str = ""
    request_id: str = ""
    retryable: bool = False
    seq: int = 0
    #: The jobs whose results it uses (see :mod:`server.dependencies`).
    depends_on: tuple[str, ...] = ()

    def replace(self, **changes: Any) -> JobRecord:
        """A copy with ``changes`` applied (a field it lacks is a ``TypeError``).

        As ``dataclasses.replace``, without its per-call cost: every job's
        record is replaced a few times on its way.
        """
        if not changes.keys() <= _RECORD_FIELDS:
            unknown = ", ".join(sorted(changes.keys() - _RECORD_FIELDS))
            raise TypeError(f"JobRecord has no field {unknown}")
        copy = object.__new__(JobRecord)
        fields = copy.__dict__
        fields.update(self.__dict__)
        fields.update(changes)
        return copy


_RECORD_FIELDS = frozenset(f.name for f in dataclasses.fields(JobRecord))


class RequestKeyTaken(Exception):
    """The store refused a new record: another replica stored a job with its key first."""


def new_job_id() -> str:
    """A fresh, unguessable job id (128 random bits, in hex) that says nothing
    about the server that made it."""
    return secrets.token_hex(16)


def check_job_id(job_id: str) -> str:
    """``job_id``, if it may name a job (else InvalidArgument, or JobNotFound if too odd)."""
    if not job_id:
        raise InvalidArgument("job_id is required", field="job_id", reason="JOB_ID_REQUIRED")
    if len(job_id) > 128 or not job_id.isascii() or not job_id.isprintable():
        raise JobNotFound(f"no job with id {job_id[:64]!r}", resource_name=job_id[:64])
    return job_id


@dataclasses.dataclass(frozen=True)
class NewJob:
    """A job to store: its record and, for a retryable job on a durable store,
    its request (kept until the job ends, to re-run it after a restart)."""

    record: JobRecord
    request: dict[str, Any] | None = None


class JobTable(Protocol):
    """Where job records live, and which calls may wait on the database.

    Two kinds of method, so that nothing on the event loop waits on a database:

    * Plain methods **never block**: they touch only this process's copies of
      records and the store's write queue, so they are safe on the event loop.
      A change they queue is written later, off the caller's thread, batched
      with others ("group commit"); :meth:`committed` says when.
    * Coroutines (``async def``) **may wait on the database**. A SQL table runs
      them in threads of its own, never on the caller's event loop and never
      in the caller's job pools; a table in memory returns at once.

    Attributes:
        durable: Records (and small results) outlive the process.
        exclusive: This server alone uses the store (memory, SQLite), so it is
            the only writer of its records; ``False`` for a store that
            replicas share (PostgreSQL).
        registry: The replicas sharing the store (leases, orphans, object
            uses); ``None`` when the store is exclusive.
    """

    durable: bool
    exclusive: bool
    registry: ReplicaRegistry | None

    # -- never block ----------------------------------------------------------

    def cached(self, job_id: str) -> JobRecord | None:
        """This process's copy of a record it accepted, changed or read, else ``None``.

        On a shared store a copy of another replica's job may be behind:
        :meth:`refresh` reads it again.
        """

    def insert_many(self, entries: Sequence[NewJob]) -> concurrent.futures.Future[list[JobRecord]]:
        """Store new records in one transaction; a future of them with their
        ``seq``, set once committed (or carrying the error)."""

    def insert_later(self, entries: Sequence[NewJob], delay: float) -> list[JobRecord]:
        """Keep new records here at once and store them within ``delay`` seconds,
        with a later batch (for jobs whose caller waits for their end).

        A change that finishes a kept record makes it due at once, so a short
        job's insert and end are one write, committed right away.

        Returns:
            The records as kept (numbered now on an exclusive store).
        """

    def update_soon(self, job_id: str, *, delay: float = 0.0, **changes: Any) -> JobRecord:
        """Apply ``changes`` to the copy here now and queue their write (after
        ``delay`` seconds, unless a later change of the job supersedes it).

        Raises:
            JobNotFound: This process holds no copy of the record.
        """

    def update_stored(
        self, job_id: str, **changes: Any
    ) -> tuple[JobRecord, concurrent.futures.Future[JobRecord]]:
        """Queue ``changes`` for the next transaction; the copy here changes once stored.

        A change of state applies only to an unfinished job: if another
        replica ended it first, the stored record wins.

        Returns:
            The record as changed, and a future of the record as stored.

        Raises:
            JobNotFound: This process holds no copy of the record.
        """

    def committed(self, job_id: str) -> concurrent.futures.Future[None]:
        """A future set once every write queued so far for ``job_id`` (an insert
        kept for later included) is committed: already done when none is
        queued. It carries the exception of a write that failed."""

    def store_result(
        self, job_id: str, blob: bytes | None, stored: Callable[[], None] | None = None
    ) -> None:
        """Queue keeping (or, with ``None``, dropping) a small pickled result
        with the record; ``stored`` is called (on the store's thread) once kept."""

    # -- may wait on the database ------------------------------------------------

    async def get(self, job_id: str) -> JobRecord:
        """The copy here, else the stored record; raises :class:`JobNotFound`."""

    async def refresh(self, job_id: str) -> JobRecord:
        """The stored record, read again (a record with a write still queued
        here is this process's copy); raises :class:`JobNotFound`."""

    async def update(self, job_id: str, **changes: Any) -> JobRecord:
        """Apply ``changes`` and write them now; the record as stored (a change
        of state loses to a job already ended elsewhere)."""

    async def list(
        self,
        states: Collection[JobState] = (),
        page_size: int = 0,
        page_token: str = "",
        owner: str | None = None,
    ) -> tuple[list[JobRecord], str]:
        """A page of records, newest first, and the token of the next page ("" at the end).

        ``owner`` keeps only that caller's jobs; ``None`` keeps everyone's.

        Raises:
            InvalidArgument: A bad page size or token.
        """

    async def states_of(self, job_ids: Collection[str]) -> dict[str, JobState]:
        """The stored states of ``job_ids``, as other replicas may have set them."""

    async def find_requests(self, owner: str, request_ids: Iterable[str]) -> dict[str, JobRecord]:
        """The jobs ``owner`` submitted with the idempotency keys ``request_ids``, by key."""

    async def find_request(self, owner: str, request_id: str) -> JobRecord | None:
        """:meth:`find_requests` for one key."""

    async def unfinished(self) -> builtins.list[JobRecord]:
        """Records still queued or running (after a restart: jobs it interrupted)."""

    async def request_of(self, job_id: str) -> dict[str, Any] | None:
        """The stored request of an unfinished retryable job."""

    async def stored_result(self, job_id: str) -> bytes | None:
        """The result stored with the record, if any."""

    async def stored_result_sizes(self, job_ids: Collection[str]) -> dict[str, int]:
        """The sizes in bytes of the results stored with those of ``job_ids`` that have one."""

    async def expire_results(self, before: float, keep: Collection[str] = ()) -> builtins.list[str]:
        """Mark results of jobs finished before ``before`` unavailable, but those
        of the jobs in ``keep``; returns their ids."""

    async def lose_unstored_results(self, why: str) -> builtins.list[str]:
        """After a restart (alone on the store): succeeded records with no result stored
        with them say it is gone, and ``why``; returns their ids."""

    async def why_no_result(self, job_id: str) -> str | None:
        """Why a succeeded job's result is gone, if :meth:`lose_unstored_results` said."""

    async def finished_before(self, when: float) -> builtins.list[str]:
        """Ids of finished jobs whose finish time is before ``when``."""

    async def oldest_finished(self, count: int) -> builtins.list[str]:
        """Ids of the ``count`` oldest finished jobs."""

    async def delete(self, job_ids: Iterable[str]) -> None:
        """Forget records."""

    async def count(self) -> int:
        """How many records the table holds."""

    async def close(self) -> None:
        """Write what is queued, then release the store."""


class MemoryJobTable:
    """A job table in the server's memory (lost on restart).

    Thread-safe, so executor threads may read it. Nothing here waits: its
    coroutines return at once, and every write is "committed" when made.
    Every method is O(1) except listing and expiry, which scan.
    """

    durable = False
    exclusive = True
    registry: ReplicaRegistry | None = None

    def __init__(self) -> None:
        self._records: dict[str, JobRecord] = {}
        self._lock = threading.Lock()
        self._seq = 0

    def _insert(self, entry: NewJob) -> JobRecord:
        with self._lock:
            record = entry.record
            if record.job_id in self._records:
                raise ValueError(f"job {record.job_id} exists")
            self._seq += 1
            record = record.replace(seq=self._seq, submit_time=record.submit_time or time.time())
            self._records[record.job_id] = record
            return record

    def _get(self, job_id: str) -> JobRecord:
        try:
            return self._records[job_id]
        except KeyError:
            raise JobNotFound(resource_name=job_id) from None

    def _change(self, job_id: str, changes: dict[str, Any]) -> JobRecord:
        with self._lock:
            record = self._get(job_id).replace(**changes)
            self._records[job_id] = record
            return record

    # -- never block ----------------------------------------------------------

    def cached(self, job_id: str) -> JobRecord | None:
        return self._records.get(job_id)

    def insert_many(self, entries: Sequence[NewJob]) -> concurrent.futures.Future[list[JobRecord]]:
        future: concurrent.futures.Future[list[JobRecord]] = concurrent.futures.Future()
        try:
            future.set_result([self._insert(entry) for entry in entries])
        except Exception as exc:
            future.set_exception(exc)
        return future

    def insert_later(self, entries: Sequence[NewJob], delay: float) -> list[JobRecord]:
        return [self._insert(entry) for entry in entries]

    def update_soon(self, job_id: str, *, delay: float = 0.0, **changes: Any) -> JobRecord:
        return self._change(job_id, changes)

    def update_stored(
        self, job_id: str, **changes: Any
    ) -> tuple[JobRecord, concurrent.futures.Future[JobRecord]]:
        record = self._change(job_id, changes)
        stored: concurrent.futures.Future[JobRecord] = concurrent.futures.Future()
        stored.set_result(record)
        return record, stored

    def committed(self, job_id: str) -> concurrent.futures.Future[None]:
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        done.set_result(None)
        return done

    def store_result(
        self, job_id: str, blob: bytes | None, stored: Callable[[], None] | None = None
    ) -> None:
        pass  # nothing outlives the process: the result stays on the cluster

    # -- "may wait": nothing does here ------------------------------------------

    async def get(self, job_id: str) -> JobRecord:
        return self._get(job_id)

    async def refresh(self, job_id: str) -> JobRecord:
        return self._get(job_id)

    async def update(self, job_id: str, **changes: Any) -> JobRecord:
        return self._change(job_id, changes)

    async def list(
        self,
        states: Collection[JobState] = (),
        page_size: int = 0,
        page_token: str = "",
        owner: str | None = None,
    ) -> tuple[list[JobRecord], str]:
        size, below = page_bounds(page_size, page_token)
        wanted = frozenset(states)
        with self._lock:
            records = list(self._records.values())
        page: list[JobRecord] = []
        for record in reversed(records):  # dicts keep insertion (= seq) order
            if below is not None and record.seq >= below:
                continue
            if wanted and record.state not in wanted:
                continue
            if owner is not None and record.owner != owner:
                continue
            if len(page) == size:
                return page, make_page_token(page[-1].seq)
            page.append(record)
        return page, ""

    async def states_of(self, job_ids: Collection[str]) -> dict[str, JobState]:
        records = self._records
        return {i: records[i].state for i in job_ids if i in records}

    async def find_requests(self, owner: str, request_ids: Iterable[str]) -> dict[str, JobRecord]:
        wanted = set(request_ids)
        found: dict[str, JobRecord] = {}
        with self._lock:
            for record in self._records.values():
                if record.request_id in wanted and record.owner == owner:
                    found.setdefault(record.request_id, record)
        return found

    async def find_request(self, owner: str, request_id: str) -> JobRecord | None:
        return (await self.find_requests(owner, [request_id])).get(request_id)

    # Nothing outlives the process: no orphans, requests or stored results.
    async def unfinished(self) -> builtins.list[JobRecord]:
        return []

    async def request_of(self, job_id: str) -> dict[str, Any] | None:
        return None

    async def stored_result(self, job_id: str) -> bytes | None:
        return None

    async def lose_unstored_results(self, why: str) -> builtins.list[str]:
        return []

    async def stored_result_sizes(self, job_ids: Collection[str]) -> dict[str, int]:
        return {}

    async def why_no_result(self, job_id: str) -> str | None:
        return None

    async def expire_results(self, before: float, keep: Collection[str] = ()) -> builtins.list[str]:
        expired = []
        with self._lock:
            for record in self._records.values():
                if record.job_id in keep:
                    continue
                if record.result_available and (record.finish_time or before) < before:
                    self._records[record.job_id] = record.replace(result_available=False)
                    expired.append(record.job_id)
        return expired

    async def finished_before(self, when: float) -> builtins.list[str]:
        with self._lock:
            return [
                r.job_id
                for r in self._records.values()
                if r.state.finished and r.finish_time is not None and r.finish_time < when
            ]

    async def oldest_finished(self, count: int) -> builtins.list[str]:
        with self._lock:
            out: builtins.list[str] = []
            for r in self._records.values():
                if len(out) >= count:
                    break
                if r.state.finished:
                    out.append(r.job_id)
            return out

    async def delete(self, job_ids: Iterable[str]) -> None:
        with self._lock:
            for job_id in job_ids:
                self._records.pop(job_id, None)

    async def count(self) -> int:
        return len(self._records)

    async def close(self) -> None:
        pass
