"""The job store's unique idempotency keys, in new stores and in stores made before them."""

from __future__ import annotations

import logging
import time

import pytest
import sqlalchemy as sa

from server.jobs import JobKind, JobRecord, JobState, NewJob, RequestKeyTaken
from server.store import SqlJobTable
from server.store.schema import REQUEST_KEY_INDEX, jobs_table, row_values


def record(job_id: str, request_id: str, owner: str = "alice") -> JobRecord:
    return JobRecord(
        job_id=job_id,
        state=JobState.QUEUED,
        scheduler="threads",
        kind=JobKind.FUNCTION,
        target="add",
        submit_time=time.time(),
        owner=owner,
        request_id=request_id,
    )


def old_store(path) -> sa.Engine:
    """A store as made before the unique index and the ``result_gone`` column."""
    engine = sa.create_engine(f"sqlite:///{path}")
    jobs_table.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP INDEX {REQUEST_KEY_INDEX.name}"))
        conn.execute(sa.text(f"ALTER TABLE {jobs_table.name} DROP COLUMN result_gone"))
    return engine


def column_names(path) -> set[str]:
    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        return {c["name"] for c in sa.inspect(engine).get_columns(jobs_table.name)}
    finally:
        engine.dispose()


def index_names(path) -> set[str]:
    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        return {i["name"] for i in sa.inspect(engine).get_indexes(jobs_table.name)}
    finally:
        engine.dispose()


@pytest.mark.asyncio
async def test_the_store_refuses_a_second_job_for_one_key(tmp_path):
    store = SqlJobTable(f"sqlite:///{tmp_path / 'jobs.db'}")
    try:
        store.insert_many([NewJob(record("job-1", "key"), None)]).result(10)
        # Empty keys are no keys: any number of them; another owner's key is its own.
        store.insert_many(
            [NewJob(record("job-2", ""), None), NewJob(record("job-3", ""), None)]
        ).result(10)
        store.insert_many([NewJob(record("job-4", "key", owner="bob"), None)]).result(10)
        with pytest.raises(RequestKeyTaken, match="UNIQUE"):
            store.insert_many([NewJob(record("job-5", "key"), None)]).result(10)
        assert (await store.find_request("alice", "key")).job_id == "job-1"
        assert await store.count() == 4
    finally:
        await store.close()


@pytest.mark.asyncio
async def test_a_store_made_before_gets_the_index_and_column(tmp_path):
    path = tmp_path / "jobs.db"
    old_store(path).dispose()
    assert REQUEST_KEY_INDEX.name not in index_names(path)
    assert "result_gone" not in column_names(path)
    store = SqlJobTable(f"sqlite:///{path}")
    await store.close()
    assert REQUEST_KEY_INDEX.name in index_names(path)
    assert "result_gone" in column_names(path)


@pytest.mark.asyncio
async def test_a_store_made_before_with_repeated_keys_still_opens(tmp_path, caplog):
    path = tmp_path / "jobs.db"
    engine = old_store(path)
    with engine.begin() as conn:
        for job_id in ("old-1", "old-2"):
            finished = record(job_id, "dup").replace(state=JobState.SUCCEEDED)
            conn.execute(jobs_table.insert().values(row_values(finished)))
    engine.dispose()
    with caplog.at_level(logging.WARNING, logger="server.store.schema"):
        store = SqlJobTable(f"sqlite:///{path}")
    try:
        assert "repeat idempotency keys" in caplog.text and "'alice' 'dup'" in caplog.text
        assert (await store.find_request("alice", "dup")).job_id == "old-2", "the latest answers"
    finally:
        await store.close()
    assert REQUEST_KEY_INDEX.name not in index_names(path)


@pytest.mark.asyncio
async def test_results_not_stored_with_their_records_are_marked_gone(tmp_path):
    store = SqlJobTable(f"sqlite:///{tmp_path / 'jobs.db'}")
    try:
        now = time.time()
        done = {"state": JobState.SUCCEEDED, "finish_time": now, "result_available": True}
        store.insert_many(
            [NewJob(record(f"job-{i}", "").replace(**done), None) for i in range(3)]
            + [NewJob(record("failed", "").replace(state=JobState.FAILED, finish_time=now), None)]
        ).result(10)
        store.store_result("job-0", b"kept")
        assert await store.lose_unstored_results("lost in a restart") == ["job-1", "job-2"]
        assert (await store.get("job-0")).result_available
        assert not (await store.get("job-1")).result_available
        assert await store.why_no_result("job-1") == "lost in a restart"
        assert await store.why_no_result("job-0") is None
        assert await store.lose_unstored_results("again") == []
    finally:
        await store.close()
