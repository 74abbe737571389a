"""A durable job table: SQLite by default, PostgreSQL for replicas that share records.

One implementation for both, on SQLAlchemy Core. Records are written before a
job is acknowledged; this process's own records are also kept in memory, so
reading them costs no query. Small results are stored with their record, and
the request of a retryable job is kept until the job ends, so a restarted
server can answer for, and re-run, what it had accepted.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import fcntl
import functools
import json
import logging
import math
import os
import pathlib
import threading
import time
from collections.abc import Callable, Collection, Iterable
from typing import Any

import sqlalchemy as sa

from server.errors import JobNotFound
from server.jobs import JobError, JobKind, JobRecord, JobState, make_page_token, page_bounds

logger = logging.getLogger(__name__)

metadata = sa.MetaData()

jobs_table = sa.Table(
    "dask_compute_jobs",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(64), nullable=False, unique=True),
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("scheduler", sa.String(16), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("target", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False, default=""),
    sa.Column("result_format", sa.String(16), nullable=False, default="auto"),
    sa.Column("submit_time", sa.Float, nullable=False),
    sa.Column("start_time", sa.Float),
    sa.Column("finish_time", sa.Float, index=True),
    sa.Column("error_type", sa.Text),
    sa.Column("error_message", sa.Text),
    sa.Column("error_traceback", sa.Text),
    sa.Column("error_pickled", sa.LargeBinary),
    sa.Column("cancel_reason", sa.Text, nullable=False, default=""),
    sa.Column("result_available", sa.Boolean, nullable=False, default=False),
    sa.Column("owner", sa.String(256), nullable=False, default="", index=True),
    sa.Column("request_id", sa.String(128), nullable=False, default="", index=True),
    sa.Column("retryable", sa.Boolean, nullable=False, default=False),
    sa.Column("instance_id", sa.String(64), nullable=False, default=""),
    # The job's request (JSON, payload base64) while a retryable job is unfinished.
    sa.Column("request", sa.Text),
    # A small result, cloudpickled, so it outlives a restart.
    sa.Column("result", sa.LargeBinary),
)

# Replicas sharing the store say they are alive here; see SqlJobTable.adopt_orphans.
replicas_table = sa.Table(
    "dask_compute_replicas",
    metadata,
    sa.Column("instance_id", sa.String(64), primary_key=True),
    sa.Column("last_seen", sa.Float, nullable=False),
)

# Replicas sharing the store record here when each uploaded object was last
# used, through any of them; see SqlJobTable.use_objects.
object_uses_table = sa.Table(
    "dask_compute_object_uses",
    metadata,
    sa.Column("owner", sa.String(256), primary_key=True),
    sa.Column("object_id", sa.String(128), primary_key=True),
    sa.Column("last_used", sa.Float, nullable=False),
)

_RECORD_COLUMNS = (
    "job_id", "state", "scheduler", "kind", "target", "name", "result_format", "submit_time",
    "start_time", "finish_time", "cancel_reason", "result_available", "owner", "request_id",
    "retryable",
)  # fmt: skip


def _row_values(record: JobRecord) -> dict[str, Any]:
    values = {name: getattr(record, name) for name in _RECORD_COLUMNS}
    values["state"] = record.state.value
    values["kind"] = record.kind.value
    error = record.error
    values.update(
        error_type=error.type if error else None,
        error_message=error.message if error else None,
        error_traceback=error.traceback if error else None,
        error_pickled=error.pickled_exception if error else None,
    )
    return values


#: The columns a whole-record update writes (the job id is the key).
_UPDATED_COLUMNS = (
    *(name for name in _RECORD_COLUMNS if name != "job_id"),
    "error_type", "error_message", "error_traceback", "error_pickled",
)  # fmt: skip


@functools.cache
def _row_update(compare_state: bool, clear_request: bool) -> sa.Update:
    """A whole-record UPDATE with bound parameters, built once: cheap to run again.

    ``compare_state`` applies it only to an unfinished job; ``clear_request``
    drops the kept request (the job has ended).
    """
    columns = (*_UPDATED_COLUMNS, "request") if clear_request else _UPDATED_COLUMNS
    statement = jobs_table.update().where(jobs_table.c.job_id == sa.bindparam("b_job_id"))
    if compare_state:
        # Two comparisons, not IN: an IN list is re-expanded on every run.
        statement = statement.where(
            sa.or_(*(jobs_table.c.state == sa.literal(state) for state in _UNFINISHED))
        )
    return statement.values({name: sa.bindparam(f"v_{name}") for name in columns})


def _record_update(record: JobRecord, compare_state: bool) -> tuple[sa.Update, dict[str, Any]]:
    """The statement and parameters that write ``record`` over its row."""
    params = {f"v_{k}": v for k, v in _row_values(record).items() if k != "job_id"}
    finished = record.state.finished
    if finished:
        params["v_request"] = None  # the payload is kept only until the job ends
    params["b_job_id"] = record.job_id
    return _row_update(compare_state, finished), params


def _write_record(conn: sa.Connection, record: JobRecord, compare_state: bool) -> bool:
    """Write ``record`` over its row; whether it applied (see :func:`_row_update`)."""
    statement, params = _record_update(record, compare_state)
    return bool(conn.execute(statement, params).rowcount)


_INSERT = jobs_table.insert()
_STORE_RESULT = (
    jobs_table.update()
    .where(jobs_table.c.job_id == sa.bindparam("b_job_id"))
    .values(result=sa.bindparam("v_result"))
)


def _record(row: Any) -> JobRecord:
    error = None
    if row.error_type is not None:
        error = JobError(
            type=row.error_type,
            message=row.error_message or "",
            traceback=row.error_traceback or "",
            pickled_exception=row.error_pickled or b"",
        )
    return JobRecord(
        job_id=row.job_id,
        state=JobState(row.state),
        scheduler=row.scheduler,
        kind=JobKind(row.kind),
        target=row.target,
        name=row.name,
        result_format=row.result_format,
        submit_time=row.submit_time,
        start_time=row.start_time,
        finish_time=row.finish_time,
        error=error,
        cancel_reason=row.cancel_reason,
        result_available=row.result_available,
        owner=row.owner,
        request_id=row.request_id,
        retryable=row.retryable,
        seq=row.seq,
    )


_UNFINISHED = (JobState.QUEUED.value, JobState.RUNNING.value)

_RECORD_SELECT = [c for c in jobs_table.c if c.name not in ("request", "result", "instance_id")]


def make_engine(url: str) -> sa.Engine:
    """An engine for ``url``; SQLite files get WAL mode and their folder is created."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:":
            path = pathlib.Path(database).expanduser()
            path.parent.mkdir(parents=True, exist_ok=True)
            parsed = parsed.set(database=str(path))
        engine = sa.create_engine(parsed, connect_args={"check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            # A commit survives the process being killed (kill -9); only a
            # power cut can lose the last transactions. Much faster than FULL.
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


#: Deferred writes fall due on a grid of this many seconds, so that those
#: due at about the same time go in one transaction.
DUE_TICK = 0.1


class _Writer:
    """One thread that writes queued changes in as few transactions as it can.

    Writes queue while a transaction runs and go together in the next one
    ("group commit"), off the server's event loop. A write may wait until a
    time (``due``, rounded up to :data:`DUE_TICK`) and is dropped when a
    later write of the same job supersedes it before then: a job that
    finishes quickly never has its RUNNING state written on its own.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        self._cond = threading.Condition()
        self._queue: list[_Write] = []
        self._deferred: dict[str, _Write] = {}
        self._writing: list[_Write] = []  # the batch being written now
        self._next_due = math.inf  # no deferred write is due before this
        self._wake_at = 0.0  # when the waiting thread wakes by itself (0: it is not waiting)
        self._busy = False
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="dask-compute-store", daemon=True)
        self._thread.start()

    def put(self, write: _Write) -> None:
        """Queue ``write``; a whole-record write of a job drops its deferred one."""
        with self._cond:
            if write.whole_record:
                self._deferred.pop(write.job_id, None)
            if write.due:
                write.due = math.ceil(write.due / DUE_TICK) * DUE_TICK
                self._deferred[write.job_id] = write
                self._next_due = min(self._next_due, write.due)
                if write.due < self._wake_at:
                    self._cond.notify_all()
            else:
                self._queue.append(write)
                self._cond.notify_all()

    def deferred(self, job_id: str) -> bool:
        """Whether a write of ``job_id`` waits for its time (not taken for writing yet)."""
        with self._cond:
            return job_id in self._deferred

    def pending(self, job_id: str) -> bool:
        """Whether a write of ``job_id`` is queued and not yet committed."""
        with self._cond:
            return job_id in self._deferred or any(
                w.job_id == job_id for w in (*self._queue, *self._writing)
            )

    def flush(self) -> None:
        """Write everything queued, deferred writes included, and wait until it is."""
        with self._cond:
            self._queue.extend(self._deferred.values())
            self._deferred.clear()
            self._next_due = math.inf
            self._cond.notify_all()
            while (self._queue or self._busy) and self._thread.is_alive():
                self._cond.wait(0.1)

    def close(self) -> None:
        """Write what is queued, then stop the thread."""
        self.flush()
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(10)

    def _take(self) -> list[_Write] | None:
        with self._cond:
            while True:
                now = time.monotonic()
                if self._next_due <= now:
                    for job_id, write in list(self._deferred.items()):
                        if write.due <= now:
                            self._queue.append(self._deferred.pop(job_id))
                    self._next_due = min((w.due for w in self._deferred.values()), default=math.inf)
                if self._queue:
                    batch, self._queue = self._queue, []
                    self._busy = True
                    self._writing = batch
                    return batch
                if self._closing:
                    return None
                # Woken by an immediate write, or one due before it would wake.
                self._wake_at = self._next_due
                timeout = None if self._next_due == math.inf else max(0.0, self._next_due - now)
                self._cond.wait(timeout)
                self._wake_at = 0.0

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            try:
                self._write(batch)
            finally:
                with self._cond:
                    self._busy = False
                    self._writing = []
                    self._cond.notify_all()
            # Not kept while waiting for the next: a write's callback may hold
            # a job's result, which the cluster must be free to let go.
            del batch

    def _write(self, batch: list[_Write]) -> None:
        try:
            with self._engine.begin() as conn:
                outcomes: list[Any] = _apply_batch(conn, batch)
        except Exception:
            # One bad write must not sink the others: write each alone.
            outcomes = []
            for write in batch:
                try:
                    with self._engine.begin() as conn:
                        outcomes.append(write.apply(conn))
                except Exception as exc:
                    logger.exception("job store: a write of job %s failed", write.job_id)
                    outcomes.append(exc)
        for write, outcome in zip(batch, outcomes, strict=True):
            try:
                write.done(outcome)
            except Exception:  # a waiter's mistake must not stop the writer
                logger.exception("job store: a write's callback failed")


def _apply_batch(conn: sa.Connection, batch: list[_Write]) -> list[Any]:
    """Apply a batch in one transaction, with one statement for many rows where it can.

    New rows go first, then each job's latest whole-record write (an earlier
    one of the same job is superseded: its outcome is ``None``), then the
    writes of results (which touch a column no record write does). Writes
    that say how (``plan``) and share a statement run as one ``executemany``;
    the others run alone, in order.

    Returns:
        Each write's outcome, in the batch's order.
    """
    outcomes: list[Any] = [None] * len(batch)
    latest: dict[str | None, int] = {}
    for index, write in enumerate(batch):
        if write.whole_record:
            latest[write.job_id] = index
    kept = [i for i, w in enumerate(batch) if not w.whole_record or latest[w.job_id] == i]
    plans = {i: batch[i].plan() if batch[i].plan is not None else None for i in kept}

    def place(index: int) -> tuple[int, int]:
        # By rank; within one, the writes of a statement together (a job has at
        # most one record write left, and its result writes keep their order).
        plan = plans[index]
        return batch[index].rank, 0 if plan is None else id(plan[0])

    runs: list[tuple[Any, list[int], list[dict[str, Any]]]] = []
    for index in sorted(kept, key=place):
        plan = plans[index]
        if plan is None:
            runs.append((None, [index], []))
        elif runs and runs[-1][0] is plan[0] and batch[runs[-1][1][0]].rank == batch[index].rank:
            runs[-1][1].append(index)
            runs[-1][2].append(plan[1])
        else:
            runs.append((plan[0], [index], [plan[1]]))
    for statement, indexes, params in runs:
        if statement is None:
            outcomes[indexes[0]] = batch[indexes[0]].apply(conn)
            continue
        conn.execute(statement, params)
        for index in indexes:
            plan = plans[index]
            outcomes[index] = plan[2] if len(plan) > 2 else None
    return outcomes


@dataclasses.dataclass
class _Write:
    """One queued change: ``apply`` runs it in a transaction, ``done`` gets its outcome."""

    job_id: str | None
    apply: Callable[[sa.Connection], Any]
    done: Callable[[Any], None] = lambda outcome: None
    due: float = 0.0
    #: Whether it writes every column of the job's record (so supersedes a deferred write).
    whole_record: bool = False
    #: Where it goes in a batch: new rows (0), then records (1), then results (2).
    rank: int = 1
    #: When the write is one statement whose outcome is known beforehand: a
    #: function giving, at write time, the statement, its parameters and
    #: optionally the outcome (else ``None``), so that many such run as one.
    plan: Callable[[], tuple[Any, ...] | None] | None = None


class StoreInUse(RuntimeError):
    """Another running server holds the SQLite job store."""


def _lock_sqlite_file(url: str) -> Any:
    """Hold an exclusive lock beside a SQLite file for as long as the server runs.

    Two servers on one SQLite file would each take the other's running jobs
    for ones a crash left behind; the second is refused instead.
    """
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    path = pathlib.Path(parsed.database).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(f"{path}.lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise StoreInUse(
            f"the job store {path} is in use by another server ({holder}); give each "
            "server its own --job-store, or share records through PostgreSQL"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}\n")
    handle.flush()
    return handle


class SqlJobTable:
    """A :class:`server.jobs.JobTable` in a SQL database.

    ``durable`` tells the core that records and small results outlive the
    process.

    Args:
        url: A SQLAlchemy URL: ``sqlite:///path/jobs.db`` or
            ``postgresql+psycopg://user:password@host/db``.
        instance_id: This server instance, recorded with the jobs it accepts.
    """

    durable = True

    def __init__(self, url: str, instance_id: str = "") -> None:
        self.url = url
        self._lock_file = _lock_sqlite_file(url)
        self.engine = make_engine(url)
        metadata.create_all(self.engine)
        self.instance_id = instance_id
        self._cache: dict[str, JobRecord] = {}
        # Records kept here and not yet stored (see insert_later): job id ->
        # (when it is due, its kept request).
        self._unwritten: dict[str, tuple[float, str | None]] = {}
        self._lock = threading.Lock()
        self._writer = _Writer(self.engine)
        # Idempotency keys stored before this server started (exclusive stores).
        self._earlier_keys: set[tuple[str, str]] | None = None
        # On a store of this server's own, it numbers new records itself, when
        # it accepts them: the order of listings is the order of acceptance,
        # even for a record stored later (insert_later). Shared stores number
        # them as they are written.
        self._next_seq: int | None = None
        if self.exclusive:
            with self.engine.connect() as conn:
                self._next_seq = (
                    conn.execute(sa.select(sa.func.max(jobs_table.c.seq))).scalar() or 0
                ) + 1

    def _number(self, count: int) -> list[int] | None:
        """The next ``count`` seqs, on a store of this server's own (else ``None``)."""
        if self._next_seq is None:
            return None
        with self._lock:
            first = self._next_seq
            self._next_seq += count
        return list(range(first, first + count))

    def _new_row(self, record: JobRecord, request: str | None, seq: int = 0) -> dict[str, Any]:
        """The values of a new row for ``record``, with its kept ``request`` (JSON)
        and the ``seq`` this server gave it (0: the database numbers it)."""
        values = _row_values(record)
        values["instance_id"] = self.instance_id
        values["request"] = request
        if seq:
            values["seq"] = seq
        return values

    def _kept_row(self, record: JobRecord, unwritten: tuple[float, str | None]) -> dict[str, Any]:
        """The new row of a record kept for later (its request only while it is unfinished)."""
        return self._new_row(record, None if record.state.finished else unwritten[1], record.seq)

    @property
    def exclusive(self) -> bool:
        """Whether this server alone uses the store (SQLite), so every unfinished
        record at start-up was left by an earlier run of this server."""
        return self._lock_file is not None

    def close(self) -> None:
        """Write what is queued, then release the connections (and the SQLite file's lock)."""
        self._writer.close()
        self.engine.dispose()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def insert(self, record: JobRecord, request: dict[str, Any] | None = None) -> JobRecord:
        numbered = self._number(1)
        text = json.dumps(request) if request is not None else None
        values = self._new_row(record, text, numbered[0] if numbered is not None else 0)
        with self.engine.begin() as conn:
            seq = conn.execute(_INSERT, values).inserted_primary_key[0]
        record = record.replace(seq=seq)
        with self._lock:
            self._cache[record.job_id] = record
        return record

    def insert_many(
        self, items: list[tuple[JobRecord, dict[str, Any] | None]]
    ) -> concurrent.futures.Future[list[JobRecord]]:
        """Store new records in one transaction, off the caller's thread.

        Returns:
            A future of the records with their ``seq``, set once they are committed.
        """
        numbered = self._number(len(items))
        rows = [
            self._new_row(
                record,
                json.dumps(request) if request is not None else None,
                numbered[index] if numbered is not None else 0,
            )
            for index, (record, request) in enumerate(items)
        ]
        future: concurrent.futures.Future[list[JobRecord]] = concurrent.futures.Future()

        def apply(conn: sa.Connection) -> list[int]:
            if numbered is not None:
                conn.execute(_INSERT, rows)  # one executemany
                return numbered
            if len(rows) == 1:
                return [conn.execute(_INSERT, rows[0]).inserted_primary_key[0]]
            # One executemany, then the seqs in one query: several times
            # cheaper than a statement per row, or RETURNING in order.
            conn.execute(_INSERT, rows)
            ids = [values["job_id"] for values in rows]
            seqs: dict[str, int] = {}
            for start in range(0, len(ids), 500):
                query = sa.select(jobs_table.c.job_id, jobs_table.c.seq).where(
                    jobs_table.c.job_id.in_(ids[start : start + 500])
                )
                seqs.update((row.job_id, row.seq) for row in conn.execute(query))
            return [seqs[job_id] for job_id in ids]

        def done(outcome: Any) -> None:
            if not future.set_running_or_notify_cancel():
                return  # nobody waits for it any more
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
                return
            stored = [
                record.replace(seq=seq) for (record, _), seq in zip(items, outcome, strict=True)
            ]
            with self._lock:
                for record in stored:
                    self._cache[record.job_id] = record
            future.set_result(stored)

        self._writer.put(_Write(None, apply, done, rank=0))
        return future

    def insert_later(
        self, items: list[tuple[JobRecord, dict[str, Any] | None]], delay: float
    ) -> list[JobRecord]:
        """Keep new records here now and store them within ``delay`` seconds.

        For jobs whose caller waits for them to end (a ``Run``): such a job
        starts at once, and if it ends within ``delay`` its record is stored
        once, finished, batched with others. Until stored, every read of this
        process (:meth:`get`, :meth:`refresh`) sees it, and every read of the
        database (listing, expiry) stores it first. A record whose server
        stops before it is stored is lost with the call that waited for it.

        Returns:
            The records as kept: numbered now on a store of this server's own,
            else once they are stored.
        """
        due = time.monotonic() + delay
        numbered = self._number(len(items))
        kept = [
            record if numbered is None else record.replace(seq=numbered[index])
            for index, (record, _) in enumerate(items)
        ]
        with self._lock:
            for record, (_, request) in zip(kept, items, strict=True):
                self._cache[record.job_id] = record
                text = json.dumps(request) if request is not None else None
                self._unwritten[record.job_id] = (due, text)
        for record in kept:
            self._writer.put(self._record_write(record, False, due))
        return kept

    def _record_write(self, record: JobRecord, compare_state: bool, due: float) -> _Write:
        """The write of a whole record over its row: inserted if it is not stored yet.

        A change of state applies only to an unfinished job: if another
        replica finished it first, the stored record replaces this copy.
        """
        job_id = record.job_id

        def apply(conn: sa.Connection) -> Any:
            if _write_record(conn, record, compare_state):
                return None
            with self._lock:
                unwritten = self._unwritten.get(job_id)
                latest = self._cache.get(job_id, record)
            if unwritten is not None:
                values = self._kept_row(latest, unwritten)
                return conn.execute(_INSERT, values).inserted_primary_key[0]
            row = conn.execute(
                sa.select(*_RECORD_SELECT).where(jobs_table.c.job_id == job_id)
            ).first()
            return None if row is None else _record(row)

        def done(outcome: Any) -> None:
            with self._lock:
                if isinstance(outcome, int):  # inserted: its seq
                    self._unwritten.pop(job_id, None)
                    current = self._cache.get(job_id)
                    if current is not None:
                        self._cache[job_id] = current.replace(seq=outcome)
                elif isinstance(outcome, JobRecord) and job_id in self._cache:
                    self._cache[job_id] = outcome  # another replica got there first

        def plan() -> tuple[Any, ...] | None:
            # On this server's own store nobody else ends a job, so the
            # outcome of a stored record's write tells nothing: many go as one.
            # A record not stored yet is inserted, with the seq it was given
            # when accepted (its outcome, for `done`); a batch holds one
            # record write per job, so no row is inserted twice.
            if not self.exclusive:
                return None
            with self._lock:
                unwritten = self._unwritten.get(job_id)
                latest = self._cache.get(job_id, record)
            if unwritten is None:
                return _record_update(record, compare_state)
            if not latest.seq:
                return None
            # Its record as it is now: changes made while it waited (see
            # update_soon) go in with it.
            return _INSERT, self._kept_row(latest, unwritten), latest.seq

        return _Write(job_id, apply, done, due, whole_record=True, plan=plan)

    def update_soon(self, job_id: str, *, delay: float = 0.0, **changes: Any) -> JobRecord:
        """Apply ``changes`` here now and write them with the next transaction.

        The write happens off the caller's thread, batched with others; with
        ``delay`` it waits that long and is dropped if a later change of the
        job comes first (which writes the whole record anyway). A change of
        state applies only to an unfinished job: if another replica finished
        it first, the stored record wins and replaces this process's copy.

        Returns:
            The record as changed here.
        """
        with self._lock:
            record = self.get(job_id).replace(**changes)
            self._cache[job_id] = record
            unwritten = self._unwritten.get(job_id)
        if unwritten is not None and self.exclusive and self._writer.deferred(job_id):
            # A record kept for later whose write still waits: that write
            # stores the record as it is when it is made, this change with it.
            return record
        due = time.monotonic() + delay if delay > 0 else 0.0
        if unwritten is not None:
            due = max(due, unwritten[0])  # a record kept for later is stored when it is due
        self._writer.put(self._record_write(record, "state" in changes, due))
        return record

    def get(self, job_id: str) -> JobRecord:
        record = self._cache.get(job_id)
        return record if record is not None else self._read(job_id)

    def update_stored(
        self, job_id: str, **changes: Any
    ) -> tuple[JobRecord, concurrent.futures.Future[JobRecord]]:
        """Store ``changes`` with the next transaction; this process sees them once stored.

        As :meth:`update`, but the write happens off the caller's thread
        (batched with others), so a server on a shared store need not block
        its event loop on the database. A change of state applies only to an
        unfinished job: if another replica finished it first, the stored
        record wins. Until the write is committed, :meth:`get` gives the
        record as it was: nobody here is told of a change the store may refuse.

        Returns:
            The record as changed, and a future of the record as stored (the
            other replica's, if its end won), set once the write is committed.
        """
        stored: concurrent.futures.Future[JobRecord] = concurrent.futures.Future()
        record = self.get(job_id).replace(**changes)
        write = self._record_write(record, "state" in changes, 0.0)
        settle = write.done

        def done(outcome: Any) -> None:
            settle(outcome)  # the stored record, if it won, replaces this process's copy
            with self._lock:
                if isinstance(outcome, JobRecord):
                    final = outcome
                else:  # written (or failed: this process still sees what it did)
                    current = self._cache.get(job_id)
                    final = record if current is None else current.replace(**changes)
                    self._cache[job_id] = final
            if isinstance(outcome, BaseException):
                stored.set_exception(outcome)
            else:
                stored.set_result(final)

        write.done = done
        self._writer.put(write)
        return record, stored

    def update(self, job_id: str, **changes: Any) -> JobRecord:
        """Apply ``changes``; a change of state applies only to an unfinished job.

        A job that another replica (or an earlier run) already finished keeps
        the state it ended in: the record returned is the stored one. Written
        at once, after whatever :meth:`update_soon` queued.
        """
        self._writer.flush()
        record = self.get(job_id).replace(**changes)
        with self.engine.begin() as conn:
            applied = _write_record(conn, record, "state" in changes)
        if not applied:
            record = self._read(job_id)
        with self._lock:
            self._cache[job_id] = record
        return record

    def _read(self, job_id: str) -> JobRecord:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(*_RECORD_SELECT).where(jobs_table.c.job_id == job_id)
            ).first()
        if row is None:
            raise JobNotFound(f"no job with id {job_id!r} (never accepted, or expired)")
        return _record(row)

    def states_of(self, job_ids: Collection[str]) -> dict[str, JobState]:
        """The stored states of ``job_ids`` (bypassing this process's copies)."""
        if not job_ids:
            return {}
        query = sa.select(jobs_table.c.job_id, jobs_table.c.state).where(
            jobs_table.c.job_id.in_(list(job_ids))
        )
        with self.engine.connect() as conn:
            return {row.job_id: JobState(row.state) for row in conn.execute(query)}

    def refresh(self, job_id: str) -> JobRecord:
        """The stored record, read again (another replica may have changed it).

        A record of this process with a write still queued is its own copy.
        """
        if self._writer.pending(job_id):
            return self.get(job_id)
        record = self._read(job_id)
        with self._lock:
            if job_id in self._cache:
                self._cache[job_id] = record
        return record

    def list(
        self,
        states: Collection[JobState] = (),
        page_size: int = 0,
        page_token: str = "",
        owner: str | None = None,
    ) -> tuple[list[JobRecord], str]:
        self._writer.flush()  # the listing filters on the stored states
        size, below = page_bounds(page_size, page_token)
        query = sa.select(*_RECORD_SELECT).order_by(jobs_table.c.seq.desc()).limit(size + 1)
        if below is not None:
            query = query.where(jobs_table.c.seq < below)
        if states:
            query = query.where(jobs_table.c.state.in_([s.value for s in states]))
        if owner is not None:
            query = query.where(jobs_table.c.owner == owner)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        page = [self._cache.get(row.job_id) or _record(row) for row in rows[:size]]
        return page, (make_page_token(page[-1].seq) if len(rows) > size else "")

    def delete(self, job_ids: Iterable[str]) -> None:
        self._writer.flush()
        ids = list(job_ids)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            with self.engine.begin() as conn:
                conn.execute(jobs_table.delete().where(jobs_table.c.job_id.in_(chunk)))
        with self._lock:
            for job_id in ids:
                self._cache.pop(job_id, None)

    def finished_before(self, when: float) -> list[str]:
        self._writer.flush()
        query = sa.select(jobs_table.c.job_id).where(jobs_table.c.finish_time < when)
        with self.engine.connect() as conn:
            return [row.job_id for row in conn.execute(query)]

    def oldest_finished(self, count: int) -> list[str]:
        self._writer.flush()
        query = (
            sa.select(jobs_table.c.job_id)
            .where(jobs_table.c.finish_time.is_not(None))
            .order_by(jobs_table.c.seq)
            .limit(count)
        )
        with self.engine.connect() as conn:
            return [row.job_id for row in conn.execute(query)]

    def forget(self, job_id: str) -> None:
        """Drop a finished record from the memory cache (the database keeps it)."""
        with self._lock:
            self._cache.pop(job_id, None)

    def unfinished(self) -> list[JobRecord]:
        """Records still queued or running, oldest first (after a restart: orphans)."""
        self._writer.flush()
        query = (
            sa.select(*_RECORD_SELECT)
            .where(jobs_table.c.state.in_([JobState.QUEUED.value, JobState.RUNNING.value]))
            .order_by(jobs_table.c.seq)
        )
        with self.engine.connect() as conn:
            return [_record(row) for row in conn.execute(query)]

    def find_request(self, owner: str, request_id: str) -> JobRecord | None:
        return self.find_requests(owner, [request_id]).get(request_id)

    def find_requests(self, owner: str, request_ids: Iterable[str]) -> dict[str, JobRecord]:
        # No flush: records are stored before they are acknowledged, and
        # queued changes never touch the key; the copy here is overlaid.
        wanted = list(dict.fromkeys(request_ids))
        if self.exclusive:
            # Only this server writes the store: a key it has not seen since
            # it started (the core remembers those) must be in the keys stored
            # before then, which are read once, rather than once per job.
            if self._earlier_keys is None:
                query = sa.select(jobs_table.c.owner, jobs_table.c.request_id).where(
                    jobs_table.c.request_id != ""
                )
                with self.engine.connect() as conn:
                    self._earlier_keys = {
                        (row.owner, row.request_id) for row in conn.execute(query)
                    }
            wanted = [key for key in wanted if (owner, key) in self._earlier_keys]
        found: dict[str, JobRecord] = {}
        for start in range(0, len(wanted), 500):
            query = (
                sa.select(*_RECORD_SELECT)
                .where(
                    jobs_table.c.owner == owner,
                    jobs_table.c.request_id.in_(wanted[start : start + 500]),
                )
                .order_by(jobs_table.c.seq)  # a key's latest job last, and kept
            )
            with self.engine.connect() as conn:
                for row in conn.execute(query):
                    found[row.request_id] = self._cache.get(row.job_id) or _record(row)
        return found

    def expire_results(self, before: float) -> list[str]:
        self._writer.flush()
        condition = sa.and_(
            jobs_table.c.result_available.is_(True), jobs_table.c.finish_time < before
        )
        with self.engine.begin() as conn:
            ids = [r.job_id for r in conn.execute(sa.select(jobs_table.c.job_id).where(condition))]
            if ids:
                conn.execute(
                    jobs_table.update()
                    .where(jobs_table.c.job_id.in_(ids))
                    .values(result_available=False, result=None)
                )
        with self._lock:
            for job_id in ids:
                if job_id in self._cache:
                    self._cache[job_id] = self._cache[job_id].replace(result_available=False)
        return ids

    def request_of(self, job_id: str) -> dict[str, Any] | None:
        """The stored request of an unfinished retryable job."""
        query = sa.select(jobs_table.c.request).where(jobs_table.c.job_id == job_id)
        with self.engine.connect() as conn:
            text = conn.execute(query).scalar()
        return json.loads(text) if text else None

    def store_result(
        self, job_id: str, blob: bytes | None, stored: Callable[[], None] | None = None
    ) -> None:
        """Keep (or, with ``None``, drop) a small pickled result with the record.

        Written with the next transaction, after the job's queued changes;
        ``stored`` is called (on the writer's thread) once it is committed.
        """

        params = {"b_job_id": job_id, "v_result": blob}

        def apply(conn: sa.Connection) -> None:
            conn.execute(_STORE_RESULT, params)

        def done(outcome: Any) -> None:
            if stored is not None and not isinstance(outcome, BaseException):
                stored()

        with self._lock:
            unwritten = self._unwritten.get(job_id)
            record = self._cache.get(job_id)
            if unwritten is not None and unwritten[0] and record is not None:
                if blob is None:
                    return  # nothing stored, and no record yet to drop it from
                # A record kept for later is stored now, before its result.
                self._unwritten[job_id] = (0.0, unwritten[1])
                self._writer.put(self._record_write(record, False, 0.0))
        self._writer.put(_Write(job_id, apply, done, rank=2, plan=lambda: (_STORE_RESULT, params)))

    def adopt_orphans(self, lease: float, now: float) -> list[JobRecord]:
        """Renew this replica's lease, and take over the jobs of replicas whose lease ran out.

        Every replica sharing the store calls it regularly (more often than
        ``lease``). A replica unseen for ``lease`` seconds is gone (killed,
        its node lost): its unfinished jobs become this replica's, each taken
        by exactly one replica however many look at once, and its entry is
        removed. Jobs of a replica that never said it was alive (an older
        version) count once they are ``lease`` seconds old.

        Returns:
            The records taken over, for the caller to re-run or fail.
        """
        me = self.instance_id
        seen = {"instance_id": me, "last_seen": now}
        with self.engine.begin() as conn:
            renewed = conn.execute(
                replicas_table.update()
                .where(replicas_table.c.instance_id == me)
                .values(last_seen=now)
            ).rowcount
            if not renewed:
                conn.execute(replicas_table.insert().values(**seen))
            gone = [
                row.instance_id
                for row in conn.execute(
                    sa.select(replicas_table.c.instance_id).where(
                        replicas_table.c.last_seen < now - lease
                    )
                )
            ]
            alive = sa.select(replicas_table.c.instance_id).where(
                replicas_table.c.last_seen >= now - lease
            )
            orphaned = sa.and_(
                jobs_table.c.state.in_(_UNFINISHED),
                jobs_table.c.instance_id != me,
                sa.or_(
                    jobs_table.c.instance_id.in_(gone),
                    sa.and_(
                        jobs_table.c.instance_id.not_in(alive),
                        jobs_table.c.submit_time < now - lease,
                    ),
                ),
            )
            # The update says which rows it changed: a job another replica
            # took meanwhile no longer matches, so none is taken twice.
            taken = [
                row.job_id
                for row in conn.execute(
                    jobs_table.update()
                    .where(orphaned)
                    .values(instance_id=me)
                    .returning(jobs_table.c.job_id)
                )
            ]
            if gone:
                conn.execute(replicas_table.delete().where(replicas_table.c.instance_id.in_(gone)))
            records = []
            if taken:
                rows = conn.execute(
                    sa.select(*_RECORD_SELECT)
                    .where(jobs_table.c.job_id.in_(taken))
                    .order_by(jobs_table.c.seq)
                )
                records = [_record(row) for row in rows]
        return records

    def leave(self) -> None:
        """Say this replica is gone (a clean shutdown), so nobody waits out its lease."""
        with self.engine.begin() as conn:
            conn.execute(
                replicas_table.delete().where(replicas_table.c.instance_id == self.instance_id)
            )

    def use_objects(self, keys: Iterable[tuple[str, str]], now: float) -> None:
        """Record that the objects ``keys`` (owner, object id) were used at ``now``.

        Written with the next transaction, off the caller's thread; a later
        use already recorded (by another replica) is kept.
        """
        rows = [{"owner": o, "object_id": i, "last_used": now} for o, i in keys]
        if not rows:
            return
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        statement = insert(object_uses_table)
        statement = statement.on_conflict_do_update(
            index_elements=[object_uses_table.c.owner, object_uses_table.c.object_id],
            set_={"last_used": statement.excluded.last_used},
            where=object_uses_table.c.last_used < statement.excluded.last_used,
        )

        self._writer.put(_Write(None, lambda conn: conn.execute(statement, rows), rank=2))

    def forget_object(self, owner: str, object_id: str) -> None:
        """Drop the record of a deleted object's uses (with the next transaction)."""
        statement = object_uses_table.delete().where(
            object_uses_table.c.owner == owner, object_uses_table.c.object_id == object_id
        )
        self._writer.put(_Write(None, lambda conn: conn.execute(statement), rank=2))

    def take_unused_objects(self, before: float) -> list[tuple[str, str]]:
        """The objects last used (through any replica) before ``before``, whose
        records this removes: each is returned to exactly one caller."""
        self._writer.flush()  # uses queued here count
        with self.engine.begin() as conn:
            rows = conn.execute(
                object_uses_table.delete()
                .where(object_uses_table.c.last_used < before)
                .returning(object_uses_table.c.owner, object_uses_table.c.object_id)
            )
            return [(row.owner, row.object_id) for row in rows]

    def stored_result(self, job_id: str) -> bytes | None:
        """The result stored with the record, if any."""
        if self._writer.pending(job_id):
            self._writer.flush()
        query = sa.select(jobs_table.c.result).where(jobs_table.c.job_id == job_id)
        with self.engine.connect() as conn:
            return conn.execute(query).scalar()

    def __len__(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(jobs_table)).scalar_one()
