"""The job store's group-commit writer: one thread that writes queued changes in few transactions.

Owns the queue of :class:`Write` s (immediate, and deferred until a time),
the batching of what queued meanwhile into one transaction (with one
statement for many rows where it can: :class:`Plan`), and the bookkeeping that
says whether a job's writes are committed (:meth:`Writer.pending`,
:meth:`Writer.committed`). It knows nothing of job records: a write says what
to run, which jobs it writes, and whom to tell of its outcome.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import enum
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal, cast

import sqlalchemy as sa

logger = logging.getLogger(__name__)

#: Deferred writes fall due on a grid of this many seconds, so that those
#: due at about the same time go in one transaction.
DUE_TICK = 0.1


class Rank(enum.IntEnum):
    """Where a write goes in its batch."""

    NEW_ROWS = 0
    RECORDS = 1
    #: Results and object uses: columns and tables no record write touches.
    EXTRAS = 2


@dataclasses.dataclass(frozen=True)
class Plan:
    """A write that is one statement, known at write time, so that many run as one.

    ``outcome`` is what the write's ``done`` is told once it is committed.
    """

    statement: sa.Executable
    params: dict[str, Any]
    outcome: Any = None


def _ignore(outcome: Any) -> None:
    pass


@dataclasses.dataclass(frozen=True, eq=False)
class Write:
    """One queued change: ``apply`` runs it in a transaction, ``done`` gets its outcome.

    The outcome is what ``apply`` (or the plan) returned, or the exception
    that failed it. Writes compare by identity.
    """

    apply: Callable[[sa.Connection], Any]
    #: The jobs whose rows it writes (a whole-record write: exactly one).
    jobs: tuple[str, ...] = ()
    done: Callable[[Any], None] = _ignore
    #: When it falls due (``time.monotonic()``); 0: at once. Only whole-record writes wait.
    due: float = 0.0
    #: Whether it writes every column of its job's record (so supersedes a deferred write).
    whole_record: bool = False
    rank: Rank = Rank.RECORDS
    #: At write time: how to run it as one statement among many (``None``: run ``apply``).
    plan: Callable[[], Plan | None] | None = None

    @property
    def job_id(self) -> str | None:
        """The first job it writes, if any (a whole-record write's job)."""
        return self.jobs[0] if self.jobs else None


class _Watch:
    """A future of :meth:`Writer.committed`, and the writes it still waits for."""

    __slots__ = ("error", "future", "writes")

    def __init__(self, future: concurrent.futures.Future[None], writes: set[Write]) -> None:
        self.future = future
        self.writes = writes
        self.error: BaseException | None = None


class Writer:
    """One thread that writes queued changes in as few transactions as it can.

    Writes queue while a transaction runs and go together in the next one
    ("group commit"), off the server's event loop. A write may wait until a
    time (``due``, rounded up to :data:`DUE_TICK`) and is dropped when a
    later whole-record write of the same job supersedes it before then: a job
    that finishes quickly never has its RUNNING state written on its own.

    Lock order: a caller holding a lock of its own may call in here; the
    writer never calls out while holding its own (``done`` callbacks and plans
    run without it).

    Args:
        engine: The store's engine.
        keep_connection: Write every batch on one connection, kept open (a
            SQLite file of this server's own: no checkout from the pool per
            transaction); otherwise each batch checks one out of the pool.
    """

    def __init__(self, engine: sa.Engine, keep_connection: bool = False) -> None:
        self._engine = engine
        self._keep_connection = keep_connection
        self._conn: sa.Connection | None = None
        #: Transactions committed so far (read from any thread).
        self.commits = 0
        self._cond = threading.Condition()
        self._queue: list[Write] = []
        self._deferred: dict[str, Write] = {}
        # Every write queued and not yet settled, by job; and who waits for them.
        self._outstanding: dict[str, dict[Write, None]] = {}
        self._watches: dict[str, list[_Watch]] = {}
        self._next_due = math.inf  # no deferred write is due before this
        self._wake_at = 0.0  # when the waiting thread wakes by itself (0: it is not waiting)
        self._busy = False
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="dask-compute-store", daemon=True)
        self._thread.start()

    def put(self, write: Write) -> None:
        """Queue ``write``; a whole-record write of a job supersedes its deferred one."""
        if write.due:
            assert write.whole_record, "only whole-record writes wait for their time"
            write = dataclasses.replace(write, due=math.ceil(write.due / DUE_TICK) * DUE_TICK)
        with self._cond:
            for job_id in write.jobs:
                self._outstanding.setdefault(job_id, {})[write] = None
            if write.whole_record:
                dropped = self._deferred.pop(write.jobs[0], None)
                if dropped is not None:
                    self._supersede(dropped, write)
            if write.due:
                self._deferred[write.jobs[0]] = write
                self._next_due = min(self._next_due, write.due)
                if write.due < self._wake_at:
                    self._cond.notify_all()
            else:
                self._queue.append(write)
                self._cond.notify_all()

    def expedite(self, job_id: str) -> None:
        """Make the deferred write of ``job_id``, if any, due at once."""
        with self._cond:
            write = self._deferred.pop(job_id, None)
            if write is not None:
                self._queue.append(write)
                self._cond.notify_all()

    def deferred(self, job_id: str) -> bool:
        """Whether a write of ``job_id`` waits for its time (not taken for writing yet)."""
        with self._cond:
            return job_id in self._deferred

    def pending(self, job_id: str) -> bool:
        """Whether a write of ``job_id`` is queued and not yet committed."""
        with self._cond:
            return job_id in self._outstanding

    def committed(self, job_id: str) -> concurrent.futures.Future[None]:
        """A future set once every write of ``job_id`` queued so far is committed.

        A deferred write is waited for (until its time), as is the write that
        supersedes it. Already done when none is queued; carries the
        exception of a write that failed.
        """
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        with self._cond:
            writes = self._outstanding.get(job_id)
            if writes:
                self._watches.setdefault(job_id, []).append(_Watch(future, set(writes)))
                return future
        future.set_result(None)
        return future

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

    def _supersede(self, old: Write, new: Write) -> None:
        """``old`` is dropped unwritten: those waiting for it wait for ``new`` (lock held)."""
        for job_id in old.jobs:
            writes = self._outstanding.get(job_id)
            if writes is not None:
                writes.pop(old, None)
            for watch in self._watches.get(job_id, ()):
                if old in watch.writes:
                    watch.writes.discard(old)
                    watch.writes.add(new)

    def _take(self) -> list[Write] | None:
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
            outcomes: list[Any] = []
            try:
                outcomes = self._write(batch)
            finally:
                if len(outcomes) != len(batch):  # (the thread is dying)
                    outcomes = [RuntimeError("the job store's writer stopped")] * len(batch)
                # The bookkeeping first, so that a callback's waiter who asks
                # committed() at once is told the write is done.
                finished = self._settle(batch, outcomes)
                self._call_back(batch, outcomes)
                self._tell(finished)
            # Not kept while waiting for the next: a write's callback may hold
            # a job's result, which the cluster must be free to let go.
            del batch, outcomes
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sa.Connection]:
        """One transaction, on the kept connection or one from the pool."""
        if not self._keep_connection:
            with self._engine.begin() as conn:
                yield conn
            return
        if self._conn is None:
            self._conn = self._engine.connect()
        try:
            with self._conn.begin():
                yield self._conn
        except BaseException:
            # A connection that failed mid-transaction is not trusted again.
            conn, self._conn = self._conn, None
            with contextlib.suppress(Exception):
                conn.close()
            raise

    def _write(self, batch: list[Write]) -> list[Any]:
        try:
            with self._transaction() as conn:
                outcomes: list[Any] = apply_batch(conn, batch)
        except Exception:
            # One bad write must not sink the others: write each alone.
            outcomes = []
            for write in batch:
                try:
                    with self._transaction() as conn:
                        outcomes.append(write.apply(conn))
                except Exception as exc:
                    logger.exception("job store: a write of jobs %s failed", write.jobs[:3])
                    outcomes.append(exc)
        self.commits += 1
        return outcomes

    @staticmethod
    def _call_back(batch: list[Write], outcomes: list[Any]) -> None:
        """Give each write of a batch its outcome (in a frame of its own, so that
        no write, nor the result its callback may hold, outlives the batch)."""
        for write, outcome in zip(batch, outcomes, strict=True):
            try:
                write.done(outcome)
            except Exception:  # a waiter's mistake must not stop the writer
                logger.exception("job store: a write's callback failed")

    def _settle(self, batch: list[Write], outcomes: list[Any]) -> list[_Watch]:
        """The batch is written: nothing of it is outstanding any more.

        Returns:
            The watches (:meth:`committed` futures) it completes, for :meth:`_tell`.
        """
        finished: list[_Watch] = []
        with self._cond:
            for write, outcome in zip(batch, outcomes, strict=True):
                for job_id in write.jobs:
                    writes = self._outstanding.get(job_id)
                    if writes is not None:
                        writes.pop(write, None)
                        if not writes:
                            del self._outstanding[job_id]
                    watches = self._watches.get(job_id)
                    if watches is None:
                        continue
                    for watch in [w for w in watches if write in w.writes]:
                        watch.writes.discard(write)
                        if isinstance(outcome, BaseException) and watch.error is None:
                            watch.error = outcome
                        if not watch.writes:
                            watches.remove(watch)
                            finished.append(watch)
                    if not watches:
                        del self._watches[job_id]
            self._busy = False
            self._cond.notify_all()
        return finished

    @staticmethod
    def _tell(finished: list[_Watch]) -> None:
        """Complete the futures of the watches a batch completed (after its callbacks)."""
        for watch in finished:
            with contextlib.suppress(concurrent.futures.InvalidStateError):  # cancelled
                if watch.error is not None:
                    watch.future.set_exception(watch.error)
                else:
                    watch.future.set_result(None)


@dataclasses.dataclass
class _Run:
    """Writes of a batch that run as one statement (``statement`` ``None``: one write alone)."""

    statement: sa.Executable | None
    indexes: list[int]
    params: list[dict[str, Any]]


def apply_batch(conn: sa.Connection, batch: list[Write]) -> list[Any]:
    """Apply a batch in one transaction, with one statement for many rows where it can.

    New rows go first, then each job's latest whole-record write (an earlier
    one of the same job is superseded: its outcome is ``None``), then the
    extras (results, object uses: they touch what no record write does).
    Writes that say how (``plan``) and share a statement run as one
    ``executemany``; the others run alone, in order.

    Returns:
        Each write's outcome, in the batch's order.
    """
    outcomes: list[Any] = [None] * len(batch)
    latest: dict[str | None, int] = {}
    for index, write in enumerate(batch):
        if write.whole_record:
            latest[write.job_id] = index
    kept = [i for i, w in enumerate(batch) if not w.whole_record or latest[w.job_id] == i]
    plans = {i: make() if (make := batch[i].plan) is not None else None for i in kept}

    def place(index: int) -> tuple[int, int]:
        # By rank; within one, the writes of a statement together (a job has at
        # most one record write left, and its result writes keep their order).
        plan = plans[index]
        return batch[index].rank, 0 if plan is None else id(plan.statement)

    runs: list[_Run] = []
    for index in sorted(kept, key=place):
        plan = plans[index]
        if plan is None:
            runs.append(_Run(None, [index], []))
        elif (
            runs
            and runs[-1].statement is plan.statement
            and batch[runs[-1].indexes[0]].rank == batch[index].rank
        ):
            runs[-1].indexes.append(index)
            runs[-1].params.append(plan.params)
        else:
            runs.append(_Run(plan.statement, [index], [plan.params]))
    for run in runs:
        if run.statement is None:
            outcomes[run.indexes[0]] = batch[run.indexes[0]].apply(conn)
            continue
        execute_many(conn, run.statement, run.params)
        for index in run.indexes:
            outcomes[index] = plans[index].outcome  # type: ignore[union-attr]
    return outcomes


#: Per statement and parameter names: its SQL for SQLite and a getter per
#: placeholder (``None``: it runs through SQLAlchemy's compiler).
_Getters = list[Callable[[dict[str, Any]], Any]]
_MAX_COMPILED = 256
_compiled: dict[tuple[int, tuple[str, ...]], tuple[sa.Executable, str, _Getters] | None] = {}


def execute_many(
    conn: sa.Connection, statement: sa.Executable, params: list[dict[str, Any]]
) -> None:
    """``conn.execute(statement, params)``; on SQLite with the statement compiled once.

    The statements of a :class:`Plan` are built once and run thousands of
    times a second. SQLAlchemy compiles each from its cache, but its cache
    key is computed from the statement at every run, and for a 22-column
    write that costs more than SQLite's own work. On SQLite its SQL is
    compiled here once and run with ``exec_driver_sql`` (still one
    SQLAlchemy execution, in the transaction of ``conn``, seen by its
    events), the values passed through the column types' bind processors as
    SQLAlchemy would. Other databases, and statements this cannot run so, go
    through ``conn.execute``.
    """
    names = tuple(params[0])
    entry = None
    if conn.dialect.name == "sqlite":
        key = (id(statement), names)
        found: tuple[sa.Executable, str, _Getters] | None | Literal[False]
        found = _compiled.get(key, False)
        if found is False:
            found = _compile(conn.dialect, statement, names)
            if len(_compiled) < _MAX_COMPILED:  # (plans' statements are few, built once)
                _compiled[key] = found
        if found is not None and found[0] is statement:
            entry = found
    if entry is None or any(tuple(p) != names for p in params):
        conn.execute(statement, params)
        return
    _, sql, getters = entry
    conn.exec_driver_sql(sql, [tuple(get(p) for get in getters) for p in params])


def _compile(
    dialect: sa.Dialect, statement: sa.Executable, names: tuple[str, ...]
) -> tuple[sa.Executable, str, _Getters] | None:
    """The SQL of ``statement`` with ``names`` bound, and a getter per placeholder."""
    compiled = statement.compile(dialect=dialect, column_keys=list(names))  # type: ignore[attr-defined]
    order = compiled.positiontup
    if order is None or compiled.escaped_bind_names or compiled.literal_execute_params:
        return None
    getters: _Getters = []
    for name in order:
        bind = compiled.binds.get(name)
        if bind is None or bind.expanding or bind.callable is not None:
            return None
        process = bind.type.bind_processor(dialect)
        if name in names:
            getters.append(_getter(name, process))
        elif not bind.required:  # a literal of the statement (a compared state, say)
            value = bind.effective_value if process is None else process(bind.effective_value)
            # The cast: mypy cannot infer a lambda whose default binds the value.
            getters.append(
                cast("Callable[[dict[str, Any]], Any]", lambda _params, value=value: value)
            )
        else:
            return None  # a column default, or a missing parameter: SQLAlchemy's business
    return statement, compiled.string, getters


def _getter(name: str, process: Callable[[Any], Any] | None) -> Callable[[dict[str, Any]], Any]:
    if process is None:
        return lambda params: params[name]
    return lambda params: process(params[name])
