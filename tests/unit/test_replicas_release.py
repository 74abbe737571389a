"""Releases of results that were never stored with their records share commits."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from server.jobs import JobKind, JobRecord, JobState, NewJob, new_job_id
from server.replicas import RELEASE_WRITE_DELAY, Alone
from server.store import SqlJobTable
from server.store.schema import read_record


def _succeeded() -> NewJob:
    record = JobRecord(
        job_id=new_job_id(),
        state=JobState.SUCCEEDED,
        scheduler="threads",
        kind=JobKind.FUNCTION,
        target="ping",
        submit_time=1.0,
        finish_time=2.0,
        result_available=True,
    )
    return NewJob(record)


@pytest.mark.asyncio
@pytest.mark.parametrize("stored", [False, True])
async def test_releases_one_by_one_go_in_few_commits_unless_the_result_was_stored(
    tmp_path, stored: bool
) -> None:
    store = SqlJobTable(f"sqlite:///{tmp_path / 'jobs.db'}", instance_id="test")
    try:
        records = await asyncio.wrap_future(store.insert_many([_succeeded() for _ in range(20)]))
        commits: list[int] = []
        sa.event.listen(store.engine, "commit", lambda _conn: commits.append(1))
        alone = Alone(store, cluster=None, pools=None)  # type: ignore[arg-type]
        for record in records:  # as Runs answered one after another release theirs
            released = await alone.record_release(record.job_id, stored=stored)
            assert released.result_available is False  # what this process says at once
            await asyncio.sleep(0.005)
        for record in records:
            await asyncio.wait_for(
                asyncio.wrap_future(store.committed(record.job_id)), 5 + RELEASE_WRITE_DELAY
            )
        with store.engine.connect() as conn:
            assert all(read_record(conn, r.job_id).result_available is False for r in records)
        if stored:
            # A result that may be kept with its record goes from the store at once.
            assert len(commits) >= 10, commits
        else:
            assert len(commits) <= 2, f"{len(commits)} commits for 20 releases"
    finally:
        await store.close()
