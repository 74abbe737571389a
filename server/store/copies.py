"""This process's copies of job records, and the writes that store them.

Owns the copies of records this process accepted, changed or read (so that
reading its own jobs costs no query); which are its own (on a shared store a
copy of another replica's record is only a read, which may be behind); the
records kept for later (accepted, not stored yet: :class:`Kept`); the
numbering of new records on an exclusive store; and the whole-record
:class:`~server.store.writer.Write` of a copy, whose outcome updates the
copies (inserted: its ``seq``; lost to a job ended elsewhere: the stored
record; fenced out because another replica adopted the job: the holder's
record, no longer this process's own). Thread-safe: the writer and reader
threads update copies too.

On a shared store a write of a job this replica holds is fenced by the
lease: it applies only where the row's ``instance_id`` is still this
replica's (adopting a job rewrites it). A replica holds the jobs it stored,
and those it runs: only the holder writes a job's state as queued or
running (the runner, or recovery re-running an adopted job). A small
result kept with a record is written only where the row is this replica's
(only the holder runs a job). Changes of other replicas' jobs (a cancel, a
release through this one) are not fenced.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import functools
import json
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeGuard, cast

import sqlalchemy as sa

from server.errors import JobNotFound
from server.jobs import JobRecord, NewJob, RequestKeyTaken
from server.store import queries
from server.store.schema import (
    INSERT,
    REQUEST_KEY_INDEX,
    STORE_RESULT,
    jobs_table,
    read_record,
    record_update,
    row_values,
    write_record,
)
from server.store.writer import Plan, Rank, Write

logger = logging.getLogger(__name__)

#: The outcome of a record write that found no row (the record was deleted).
MISSING = object()


class JobAdopted(JobNotFound):
    """A write of a job's record did not apply: another replica holds the job now.

    That replica adopted it (this one's lease ran out, as after a long pause
    or a network partition): the job is no longer this replica's to record.
    """

    def __init__(self, record: JobRecord, holder: str) -> None:
        super().__init__(f"job {record.job_id} is held by replica {holder} now")
        self.record = record
        self.holder = holder


@dataclasses.dataclass(frozen=True)
class Adopted:
    """The outcome of a fenced record write that found the job held by another replica."""

    record: JobRecord
    holder: str


@functools.cache
def _fenced(statement: sa.Update) -> sa.Update:
    """``statement`` (a whole-record update, built once) applied only where this
    replica still holds the job (built once per statement too)."""
    return statement.where(jobs_table.c.instance_id == sa.bindparam("b_instance_id"))


def request_json(request: dict[str, Any] | None) -> str | None:
    """A job's request as it is stored (JSON), if it has one to keep."""
    return json.dumps(request) if request is not None else None


def not_found(job_id: str) -> JobNotFound:
    """The error for a record that is not stored."""
    return JobNotFound(resource_name=job_id)


@dataclasses.dataclass(frozen=True)
class Kept:
    """A record kept here and not stored yet (see ``SqlJobTable.insert_later``)."""

    #: When its write falls due (``time.monotonic()``); 0: at once.
    due: float
    #: Its request (JSON), kept with it until the job ends.
    request: str | None


class Copies:
    """This process's copies of records.

    Args:
        instance_id: This server instance, recorded with the rows it inserts.
        exclusive: Whether this process alone writes the store: its copies
            are never behind, and a write of one need not be read back.
        next_seq: The ``seq`` of the next new record, on an exclusive store
            (``None``: the database numbers them as they are written).
    """

    def __init__(self, instance_id: str, exclusive: bool, next_seq: int | None) -> None:
        self._instance_id = instance_id
        self._exclusive = exclusive
        self._next_seq = next_seq
        self._lock = threading.Lock()  # taken before the writer's, never after
        self._records: dict[str, JobRecord] = {}
        self._own: set[str] = set()  # (shared stores) accepted or changed here
        self._held: set[str] = set()  # (shared stores) stored or run here, not adopted since
        self._kept: dict[str, Kept] = {}

    # -- reading ------------------------------------------------------------------

    def get(self, job_id: str) -> JobRecord | None:
        """The copy of ``job_id``, if any."""
        return self._records.get(job_id)

    def held(self, job_id: str) -> JobRecord | None:
        """The copy to answer with: not a read of another replica's record."""
        record = self._records.get(job_id)
        if record is None or self._exclusive or job_id in self._own:
            return record
        return None

    def kept(self, job_id: str) -> Kept | None:
        """Whether (and how) ``job_id`` is kept for later."""
        return self._kept.get(job_id)

    # -- changing -------------------------------------------------------------------

    def number(self, count: int) -> list[int] | None:
        """The next ``count`` seqs, on a store of this server's own (else ``None``)."""
        if self._next_seq is None:
            return None
        with self._lock:
            first = self._next_seq
            self._next_seq += count
        return list(range(first, first + count))

    def accept(self, records: Sequence[JobRecord], kept: Sequence[Kept] = ()) -> None:
        """Keep copies of new ``records`` (with ``kept``: not stored yet), held here."""
        with self._lock:
            for record in records:
                self._records[record.job_id] = record
                self._own.add(record.job_id)
                if not self._exclusive:
                    self._held.add(record.job_id)
            if kept:
                for record, how in zip(records, kept, strict=True):
                    self._kept[record.job_id] = how

    def change(self, job_id: str, changes: dict[str, Any]) -> tuple[JobRecord, Kept | None]:
        """Apply ``changes`` to the copy; the new copy, and how it is kept (a
        kept record that finishes is due at once).

        Raises:
            JobNotFound: No copy.
        """
        with self._lock:
            record = self._base(job_id).replace(**changes)
            self._records[job_id] = record
            self._own.add(job_id)
            kept = self._kept.get(job_id)
            if kept is not None and kept.due and record.state.finished:
                kept = self._kept[job_id] = Kept(0.0, kept.request)
        return record, kept

    def claim(self, job_id: str, base: JobRecord | None = None) -> JobRecord:
        """The copy (or ``base``) that a change about to be stored applies to.

        It is this process's own from now on; a kept record is due at once.

        Raises:
            JobNotFound: No copy, and no ``base``.
        """
        with self._lock:
            record = base if base is not None else self._base(job_id)
            self._own.add(job_id)
            self._due_now(job_id)
        return record

    def due_now(self, job_id: str) -> JobRecord | None:
        """A copy kept for later and still waiting: made due now, and returned."""
        with self._lock:
            record = self._records.get(job_id)
            if record is None or not self._due_now(job_id):
                return None
        return record

    def keep_read(
        self, before: JobRecord | None, record: JobRecord, pending: Callable[[], bool]
    ) -> None:
        """Keep a copy read from the store, unless this process changed its own
        since ``before`` was the copy, or has a write of it queued (``pending``)."""
        with self._lock:
            if self._records.get(record.job_id) is before and not pending():
                self._records[record.job_id] = record

    def expire(self, job_ids: Iterable[str]) -> None:
        """The results of ``job_ids`` were dropped from the store."""
        with self._lock:
            for job_id in job_ids:
                if job_id in self._records:
                    self._records[job_id] = self._records[job_id].replace(result_available=False)

    def forget(self, job_ids: Iterable[str]) -> None:
        """The records of ``job_ids`` were deleted."""
        with self._lock:
            for job_id in job_ids:
                self._records.pop(job_id, None)
                self._own.discard(job_id)
                self._held.discard(job_id)
                self._kept.pop(job_id, None)

    def _base(self, job_id: str) -> JobRecord:
        record = self._records.get(job_id)
        if record is None:
            raise JobNotFound(
                f"no copy of job {job_id!r} here to change: get() it first", resource_name=job_id
            )
        return record

    def _due_now(self, job_id: str) -> bool:
        kept = self._kept.get(job_id)
        if kept is None or not kept.due:
            return False
        self._kept[job_id] = Kept(0.0, kept.request)
        return True

    # -- writing --------------------------------------------------------------------

    def new_row(self, record: JobRecord, request: str | None, seq: int = 0) -> dict[str, Any]:
        """The values of a new row for ``record``, with its kept ``request`` (JSON)
        and the ``seq`` this server gave it (0: the database numbers it)."""
        values = row_values(record)
        values["instance_id"] = self._instance_id
        values["request"] = request
        if seq:
            values["seq"] = seq
        return values

    def insert_write(
        self, entries: Sequence[NewJob], future: concurrent.futures.Future[list[JobRecord]]
    ) -> Write:
        """The write that inserts new records; ``future`` gets them with their ``seq``."""
        numbered = self.number(len(entries))
        rows = [
            self.new_row(e.record, request_json(e.request), numbered[i] if numbered else 0)
            for i, e in enumerate(entries)
        ]

        def apply(conn: sa.Connection) -> list[int]:
            if numbered is not None:
                conn.execute(INSERT, rows)  # one executemany
                return numbered
            if len(rows) == 1:
                # SQLAlchemy types the key Optional; a one-row INSERT always sets it.
                return [conn.execute(INSERT, rows[0]).inserted_primary_key[0]]  # type: ignore[index]
            # One executemany, then the seqs in one query: several times
            # cheaper than a statement per row, or RETURNING in order.
            conn.execute(INSERT, rows)
            return queries.seqs_of(conn, [values["job_id"] for values in rows])

        def done(outcome: Any) -> None:
            if isinstance(outcome, BaseException):
                if _key_taken(outcome):
                    taken = RequestKeyTaken(str(outcome.orig))
                    taken.__cause__, outcome = outcome, taken
                if future.set_running_or_notify_cancel():
                    future.set_exception(outcome)
                return
            stored = [e.record.replace(seq=seq) for e, seq in zip(entries, outcome, strict=True)]
            self.accept(stored)
            if future.set_running_or_notify_cancel():  # (else nobody waits for it any more)
                future.set_result(stored)

        jobs = tuple(e.record.job_id for e in entries)
        return Write(apply, jobs, done, rank=Rank.NEW_ROWS)

    def _kept_row(self, record: JobRecord, kept: Kept) -> dict[str, Any]:
        """The new row of a record kept for later (its request only while it is unfinished)."""
        return self.new_row(record, None if record.state.finished else kept.request, record.seq)

    def result_write(
        self, job_id: str, blob: bytes | None, stored: Callable[[], None] | None
    ) -> Write:
        """The write that keeps (or, with ``None``, drops) a small result with its record.

        ``stored`` is called (on the writer's thread) once it is committed. On
        a shared store a result is fenced as a held job's record writes are
        (only the holder runs a job): if another replica adopted the job, the
        write does not apply (that replica's run gives the job its result) and
        ``stored`` is not called. Dropping a result (a caller's release,
        through any replica) is not fenced.
        """
        fence = blob is not None and not self._exclusive
        params = {"b_job_id": job_id, "v_result": blob}
        if fence:
            params["b_instance_id"] = self._instance_id

        def apply(conn: sa.Connection) -> Any:
            if conn.execute(_fenced(STORE_RESULT) if fence else STORE_RESULT, params).rowcount:
                return None
            held = queries.held_record(conn, job_id) if fence else None
            return MISSING if held is None else Adopted(*held)

        def done(outcome: Any) -> None:
            if isinstance(outcome, Adopted) and outcome.holder != self._instance_id:
                self._adopted(job_id, outcome, "its result was not stored")
            elif stored is not None and not isinstance(outcome, BaseException):
                stored()

        plan = None if fence else (lambda: Plan(STORE_RESULT, params))
        return Write(apply, (job_id,), done, rank=Rank.EXTRAS, plan=plan)

    def record_write(
        self,
        record: JobRecord,
        compare_state: bool,
        due: float = 0.0,
        changes: dict[str, Any] | None = None,
        exact: bool = False,
        stored: concurrent.futures.Future[JobRecord] | None = None,
    ) -> Write:
        """The write of a whole record over its row: inserted if it is not stored yet.

        A change of state applies only to an unfinished job (``compare_state``):
        if another replica finished it first, the stored record replaces this
        copy. ``changes``: those of a change the copy gets once stored (and
        ``stored`` is told the record as stored); ``exact``: learn whether it
        applied even on an exclusive store (no batched plan), and raise
        :class:`JobAdopted` to ``stored`` if another replica holds the job. A
        job this replica holds is written only while it does (the fence, made
        when the write is queued); else the holder's record replaces this
        copy, which is no longer this process's own.
        """
        job_id = record.job_id
        fence = self._fence(job_id, record, compare_state)

        def latest() -> tuple[JobRecord, Kept | None]:
            # The record as it is now (changes made while it waited go in with
            # it), and whether it is kept for later (so not stored yet).
            with self._lock:
                current = self._records.get(job_id, record)
                kept = self._kept.get(job_id)
            return (current if changes is None else current.replace(**changes)), kept

        def apply(conn: sa.Connection) -> Any:
            if not fence:
                if write_record(conn, record, compare_state):
                    return None
            else:
                statement, params = record_update(record, compare_state)
                params["b_instance_id"] = self._instance_id
                if conn.execute(_fenced(statement), params).rowcount:
                    return None
            now, kept = latest()
            if kept is not None:
                row = conn.execute(INSERT, self._kept_row(now, kept))
                return row.inserted_primary_key[0]  # type: ignore[index]  # (one row: set, as above)
            if not fence:
                found = read_record(conn, job_id)
                return MISSING if found is None else found
            held = queries.held_record(conn, job_id)
            if held is None:
                return MISSING
            found, holder = held
            return found if holder == self._instance_id else Adopted(found, holder)

        def done(outcome: Any) -> None:
            final = self._settle(job_id, record, outcome, changes, exact)
            if stored is None:
                return
            with contextlib.suppress(concurrent.futures.InvalidStateError):  # cancelled
                if isinstance(outcome, BaseException):
                    stored.set_exception(outcome)
                elif exact and outcome is MISSING:
                    stored.set_exception(not_found(job_id))
                elif exact and isinstance(outcome, Adopted):
                    stored.set_exception(JobAdopted(outcome.record, outcome.holder))
                else:
                    stored.set_result(final)

        def plan() -> Plan | None:
            # On this server's own store nobody else ends a job, so the
            # outcome of a stored record's write tells nothing: many go as one.
            # A record not stored yet is inserted, with the seq it was given
            # when accepted (its outcome, for `done`); a batch holds one
            # record write per job, so no row is inserted twice.
            if exact or not self._exclusive:
                return None
            now, kept = latest()
            if kept is None:
                statement, params = record_update(record, compare_state)
                return Plan(statement, params)
            if not now.seq:
                return None
            return Plan(INSERT, self._kept_row(now, kept), now.seq)

        return Write(apply, (job_id,), done, due, whole_record=True, plan=plan)

    def _fence(self, job_id: str, record: JobRecord, compare_state: bool) -> bool:
        """Whether a write of ``record`` is fenced: a job held here (one whose
        state is written as unfinished here is held from now on)."""
        if self._exclusive:
            return False
        with self._lock:
            if compare_state and not record.state.finished:
                self._held.add(job_id)
            return job_id in self._held

    def _adopted(self, job_id: str, outcome: Adopted, what: str) -> None:
        """Another replica holds the job now: its record stands, and this
        process's copy is only a read of it from now on."""
        logger.warning(
            "job=%s %s: replica %s holds the job now "
            "(it adopted it when this replica's lease ran out)",
            job_id,
            what,
            outcome.holder,
        )
        with self._lock:
            if job_id in self._records:
                self._records[job_id] = outcome.record
            self._own.discard(job_id)
            self._held.discard(job_id)
            self._kept.pop(job_id, None)

    def _settle(
        self,
        job_id: str,
        record: JobRecord,
        outcome: Any,
        changes: dict[str, Any] | None,
        exact: bool,
    ) -> JobRecord:
        """Take a record write's outcome into the copies; the record as stored."""
        final = record
        if isinstance(outcome, Adopted):
            self._adopted(job_id, outcome, "a change was not recorded")
            return outcome.record
        with self._lock:
            if isinstance(outcome, int):  # inserted: its seq
                self._kept.pop(job_id, None)
                current = self._records.get(job_id)
                if current is not None:
                    self._records[job_id] = current.replace(seq=outcome)
            elif isinstance(outcome, JobRecord) and job_id in self._records:
                self._records[job_id] = outcome  # another replica got there first
            if changes is not None:
                if isinstance(outcome, JobRecord):
                    final = outcome
                elif not (exact and outcome is MISSING):
                    # Written (or failed: this process still sees what it did).
                    current = self._records.get(job_id)
                    final = record if current is None else current.replace(**changes)
                    self._records[job_id] = final
        return final


def _key_taken(error: BaseException) -> TypeGuard[sa.exc.IntegrityError]:
    """Whether an insert failed on the unique idempotency key (not another constraint)."""
    if not isinstance(error, sa.exc.IntegrityError):
        return False
    text = str(error.orig)
    # PostgreSQL names the index; SQLite names its columns.
    return cast(str, REQUEST_KEY_INDEX.name) in text or "dask_compute_jobs.request_id" in text
