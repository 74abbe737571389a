"""The job store's schema: its tables, the row <-> :class:`JobRecord` mapping, and its engine.

Owns the three tables (jobs, replicas, object uses), the statements that
write a whole record over its row (built once, cheap to run again),
:func:`make_engine` (SQLite files get WAL mode), and the lock that keeps a
SQLite file to one server (:class:`StoreInUse`). No threads, no state.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import pathlib
from typing import Any, TextIO

import sqlalchemy as sa

from server.jobs import JobError, JobKind, JobRecord, JobState

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
    # Why a succeeded job's result is gone though it was not released or expired
    # (it was held only by a server process that stopped); see queries.lose_results.
    sa.Column("result_gone", sa.Text),
    # The ids of the jobs whose results it uses, separated by spaces.
    sa.Column("depends_on", sa.Text),
)

#: One idempotency key of one owner names one job, across replicas (an empty key is none).
REQUEST_KEY_INDEX = sa.Index(
    "uq_dask_compute_jobs_owner_request",
    jobs_table.c.owner,
    jobs_table.c.request_id,
    unique=True,
    sqlite_where=jobs_table.c.request_id != "",
    postgresql_where=jobs_table.c.request_id != "",
)

# Replicas sharing the store say they are alive here; see ReplicaRegistry.adopt_orphans.
replicas_table = sa.Table(
    "dask_compute_replicas",
    metadata,
    sa.Column("instance_id", sa.String(64), primary_key=True),
    sa.Column("last_seen", sa.Float, nullable=False),
)

# Replicas sharing the store record here when each uploaded object was last
# used, through any of them; see ReplicaRegistry.use_objects.
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

#: The states of an unfinished job, as stored.
UNFINISHED = (JobState.QUEUED.value, JobState.RUNNING.value)

#: The columns that make a record (not the kept request, result or owning instance).
RECORD_SELECT = [
    c for c in jobs_table.c if c.name not in ("request", "result", "instance_id", "result_gone")
]

#: Columns added since the first release, as (name, SQL type): added to stores made before.
_ADDED_COLUMNS = (("result_gone", "TEXT"), ("depends_on", "TEXT"))

INSERT = jobs_table.insert()

STORE_RESULT = (
    jobs_table.update()
    .where(jobs_table.c.job_id == sa.bindparam("b_job_id"))
    .values(result=sa.bindparam("v_result"))
)


def row_values(record: JobRecord) -> dict[str, Any]:
    """The column values of ``record`` (without ``seq``, request, result or instance)."""
    values = {name: getattr(record, name) for name in _RECORD_COLUMNS}
    values["state"] = record.state.value
    values["kind"] = record.kind.value
    values["depends_on"] = " ".join(record.depends_on) or None
    error = record.error
    values.update(
        error_type=error.type if error else None,
        error_message=error.message if error else None,
        error_traceback=error.traceback if error else None,
        error_pickled=error.pickled_exception if error else None,
    )
    return values


def to_record(row: Any) -> JobRecord:
    """The :class:`JobRecord` of a row selected with :data:`RECORD_SELECT`."""
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
        depends_on=tuple((row.depends_on or "").split()),
    )


#: The columns a whole-record update writes (the job id is the key).
_UPDATED_COLUMNS = (
    *(name for name in _RECORD_COLUMNS if name != "job_id"),
    "error_type", "error_message", "error_traceback", "error_pickled", "depends_on",
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
            sa.or_(*(jobs_table.c.state == sa.literal(state) for state in UNFINISHED))
        )
    return statement.values({name: sa.bindparam(f"v_{name}") for name in columns})


def record_update(record: JobRecord, compare_state: bool) -> tuple[sa.Update, dict[str, Any]]:
    """The statement and parameters that write ``record`` over its row.

    ``compare_state``: only if the stored job is unfinished.
    """
    params = {f"v_{k}": v for k, v in row_values(record).items() if k != "job_id"}
    finished = record.state.finished
    if finished:
        params["v_request"] = None  # the payload is kept only until the job ends
    params["b_job_id"] = record.job_id
    return _row_update(compare_state, finished), params


def write_record(conn: sa.Connection, record: JobRecord, compare_state: bool) -> bool:
    """Write ``record`` over its row; whether it applied (see :func:`record_update`)."""
    statement, params = record_update(record, compare_state)
    return bool(conn.execute(statement, params).rowcount)


def read_record(conn: sa.Connection, job_id: str) -> JobRecord | None:
    """The stored record of ``job_id``, if there is one."""
    row = conn.execute(sa.select(*RECORD_SELECT).where(jobs_table.c.job_id == job_id)).first()
    return None if row is None else to_record(row)


def create_schema(engine: sa.Engine) -> None:
    """Create what is missing of the schema, in a store made before too.

    ``create_all`` creates missing tables with their indexes, but adds no
    column or index to a table that exists: columns added since (all
    nullable) are added here with ``ALTER TABLE``, and the unique index on idempotency keys
    (:data:`REQUEST_KEY_INDEX`) is added to a store made before it here. A
    store that already holds two jobs of one owner under one key (possible
    before the index) keeps working without it, as before (the latest of
    such jobs answers for the key), and a warning says which keys to clear.
    """
    metadata.create_all(engine)
    present = {c["name"] for c in sa.inspect(engine).get_columns(jobs_table.name)}
    for name, sql_type in _ADDED_COLUMNS:
        if name not in present:  # nullable, so every row made before reads NULL
            with engine.begin() as conn:
                conn.execute(sa.text(f"ALTER TABLE {jobs_table.name} ADD COLUMN {name} {sql_type}"))
    try:
        with engine.begin() as conn:
            REQUEST_KEY_INDEX.create(conn, checkfirst=True)
    except sa.exc.IntegrityError:
        with engine.connect() as conn:
            repeated = conn.execute(
                sa.select(jobs_table.c.owner, jobs_table.c.request_id)
                .where(jobs_table.c.request_id != "")
                .group_by(jobs_table.c.owner, jobs_table.c.request_id)
                .having(sa.func.count() > 1)
                .limit(5)
            ).all()
        logger.warning(
            "job store: jobs made before this version repeat idempotency keys (owner, key: "
            "%s); without a unique index on them, two replicas may each accept a job for one "
            "key. Delete the older jobs of those keys (or let them expire) and restart to add it",
            ", ".join(f"{owner!r} {key!r}" for owner, key in repeated),
        )


def make_engine(url: str) -> sa.Engine:
    """An engine for ``url``; SQLite files get WAL mode (checkpointed by
    :mod:`server.store.checkpoint`) and their folder is created."""
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
            # No commit checkpoints the log itself (a sync to disk on the
            # writer's path): server.store.checkpoint does, on its own thread.
            cursor.execute("PRAGMA wal_autocheckpoint=0")
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


class StoreInUse(RuntimeError):
    """Another running server holds the SQLite job store."""


def lock_sqlite_file(url: str) -> TextIO | None:
    """Hold an exclusive lock beside a SQLite file for as long as the server runs.

    Two servers on one SQLite file would each take the other's running jobs
    for ones a crash left behind; the second is refused instead.

    Returns:
        The open lock file (close it to release the lock), or ``None`` when
        ``url`` is not a SQLite file.

    Raises:
        StoreInUse: Another process holds the lock.
    """
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    path = pathlib.Path(parsed.database).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(f"{path}.lock", "a+")  # noqa: SIM115 (held open while the server runs)
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
