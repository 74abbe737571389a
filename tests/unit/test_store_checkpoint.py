"""The SQLite store's write-ahead log is checkpointed by a thread of its own, not by commits."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import time

import pytest

from server.jobs import JobKind, JobRecord, JobState, NewJob
from server.store import SqlJobTable
from tests.helpers import async_wait_until


def _record(job_id: str) -> JobRecord:
    return JobRecord(
        job_id=job_id,
        state=JobState.QUEUED,
        scheduler="threads",
        kind=JobKind.FUNCTION,
        target="ping",
        submit_time=time.time(),
    )


def _ids_in_file_alone(db, tmp_path):
    """The job ids the database file itself holds, without its log (as after a
    copy of the file alone)."""
    alone = tmp_path / "alone.db"
    shutil.copyfile(db, alone)
    conn = sqlite3.connect(alone)
    try:
        return {row[0] for row in conn.execute("SELECT job_id FROM dask_compute_jobs")}
    except sqlite3.OperationalError:  # not even the table is in the file yet
        return set()
    finally:
        conn.close()


@pytest.mark.asyncio
async def test_commits_reach_the_database_file_a_moment_later_and_the_log_is_emptied_at_close(
    tmp_path,
):
    db = tmp_path / "jobs.db"
    table = SqlJobTable(f"sqlite:///{db}")
    try:
        for i in range(5):
            table.insert_many([NewJob(_record(f"job-{i}"))]).result(10)
        # A few small commits are far from SQLite's own 1,000-page threshold:
        # only the store's checkpointer copies them into the file this soon.
        wanted = {f"job-{i}" for i in range(5)}
        await async_wait_until(
            lambda: _ids_in_file_alone(db, tmp_path) >= wanted,
            timeout=10,
            message="the commits never reached the database file",
        )
        with table.engine.connect() as conn:
            auto = conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
        assert auto == 0, "no commit runs a checkpoint (a sync) on the writer's path"
    finally:
        await table.close()
    wal = tmp_path / "jobs.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0, (
        "the log is checkpointed and emptied at close"
    )


@pytest.mark.asyncio
async def test_an_idle_store_is_not_checkpointed_again_and_again(tmp_path):
    table = SqlJobTable(f"sqlite:///{tmp_path / 'jobs.db'}")
    try:
        table.insert_many([NewJob(_record("job-1"))]).result(10)
        checkpointer = table.checkpointer
        assert checkpointer is not None
        await async_wait_until(lambda: checkpointer.checkpoints >= 1, timeout=10)
        seen = checkpointer.checkpoints
        await asyncio.sleep(1.0)  # four intervals with no commit
        assert checkpointer.checkpoints == seen, "no commits, no checkpoints"
    finally:
        await table.close()
