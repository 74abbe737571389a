"""The job table's interface says which calls may block, and both tables keep to it."""

from __future__ import annotations

import asyncio
import inspect
import threading

import pytest
import sqlalchemy as sa

from server.errors import JobNotFound
from server.jobs import JobKind, JobRecord, JobState, JobTable, MemoryJobTable, NewJob, new_job_id
from server.store import ReplicaRegistry, SqlJobTable, jobs_table, make_engine
from tests.helpers import postgres_server

#: What the core may call on the event loop: these touch only this process's copies
#: and the writer's queue.
NEVER_BLOCK = {
    "cached",
    "insert_many",
    "insert_later",
    "update_soon",
    "update_stored",
    "committed",
    "store_result",
}
#: What may wait on the database: coroutines, run in the store's own threads.
MAY_BLOCK = {
    "get",
    "refresh",
    "update",
    "list",
    "states_of",
    "find_requests",
    "find_request",
    "unfinished",
    "request_of",
    "stored_result",
    "lose_unstored_results",
    "why_no_result",
    "stored_result_sizes",
    "expire_results",
    "finished_before",
    "oldest_finished",
    "delete",
    "count",
    "close",
}


def _protocol_methods() -> dict[str, bool]:
    """Each method of the protocol, and whether it is a coroutine function."""
    return {
        name: inspect.iscoroutinefunction(value)
        for name, value in vars(JobTable).items()
        if inspect.isfunction(value) and not name.startswith("_")
    }


def record(**kw):
    values = {
        "job_id": new_job_id(),
        "state": JobState.QUEUED,
        "scheduler": "threads",
        "kind": JobKind.FUNCTION,
        "target": "ping",
        "submit_time": 1.0,
    }
    values.update(kw)
    return JobRecord(**values)


def _stored_state(url: str, job_id: str) -> str | None:
    """The state a fresh engine reads from the database at ``url`` (None: no row)."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(
                sa.select(jobs_table.c.state).where(jobs_table.c.job_id == job_id)
            ).scalar()
    finally:
        engine.dispose()


async def _within(future, seconds=5.0):
    return await asyncio.wait_for(asyncio.wrap_future(future), seconds)


def test_the_protocol_says_which_calls_block():
    methods = _protocol_methods()
    assert {name for name, coroutine in methods.items() if not coroutine} == NEVER_BLOCK
    assert {name for name, coroutine in methods.items() if coroutine} == MAY_BLOCK
    assert set(JobTable.__annotations__) == {"durable", "exclusive", "registry"}
    assert "forget" not in methods and "insert" not in methods


@pytest.mark.parametrize("table_type", [MemoryJobTable, SqlJobTable])
def test_both_tables_have_every_method_and_block_only_in_coroutines(table_type):
    for name, coroutine in _protocol_methods().items():
        method = getattr(table_type, name, None)
        assert callable(method), f"{table_type.__name__} lacks {name}"
        assert inspect.iscoroutinefunction(method) is coroutine, (
            f"{table_type.__name__}.{name} should {'' if coroutine else 'not '}be a coroutine"
        )
    assert not hasattr(table_type, "forget") and not hasattr(table_type, "__len__")


@pytest.mark.asyncio
async def test_memory_and_sqlite_are_exclusive_without_a_registry(tmp_path):
    memory = MemoryJobTable()
    assert (memory.durable, memory.exclusive, memory.registry) == (False, True, None)
    sqlite = SqlJobTable(f"sqlite:///{tmp_path / 'jobs.db'}")
    try:
        assert (sqlite.durable, sqlite.exclusive, sqlite.registry) == (True, True, None)
    finally:
        await sqlite.close()


@pytest.mark.asyncio
async def test_a_postgresql_store_is_shared_through_its_registry():
    with postgres_server() as url:
        table = SqlJobTable(url, instance_id="replica")
        try:
            assert table.durable and not table.exclusive
            registry = table.registry
            assert isinstance(registry, ReplicaRegistry) and registry.instance_id == "replica"
            for name in ("adopt_orphans", "leave", "take_unused_objects"):
                assert inspect.iscoroutinefunction(getattr(registry, name)), name
            for name in ("use_objects", "forget_object"):
                assert not inspect.iscoroutinefunction(getattr(registry, name)), name
        finally:
            await table.close()


@pytest.mark.asyncio
async def test_finishing_a_record_kept_for_a_minute_commits_it_at_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    table = SqlJobTable(url)
    try:
        (kept,) = table.insert_later([NewJob(record())], delay=60)
        waiting = table.committed(kept.job_id)
        assert not waiting.done(), "kept for later: not committed yet"
        table.update_soon(kept.job_id, state=JobState.RUNNING, start_time=1.0)
        assert not waiting.done() and _stored_state(url, kept.job_id) is None
        table.update_soon(kept.job_id, state=JobState.SUCCEEDED, finish_time=2.0)
        await _within(table.committed(kept.job_id))
        assert await _within(waiting) is None, "those waiting already are told too"
        assert _stored_state(url, kept.job_id) == "succeeded", "a fresh engine sees the end"
    finally:
        await table.close()


@pytest.mark.asyncio
async def test_committed_follows_a_deferred_write_to_the_one_that_supersedes_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    table = SqlJobTable(url)
    try:
        (rec,) = await _within(table.insert_many([NewJob(record())]))
        assert table.committed(rec.job_id).done(), "nothing queued: done already"
        table.update_soon(rec.job_id, delay=60, state=JobState.RUNNING, start_time=1.0)
        waiting = table.committed(rec.job_id)
        assert not waiting.done(), "a deferred write is waited for"
        table.update_soon(rec.job_id, state=JobState.FAILED, finish_time=2.0)
        await _within(waiting)
        assert _stored_state(url, rec.job_id) == "failed"
    finally:
        await table.close()


@pytest.mark.asyncio
async def test_committed_carries_the_error_of_a_write_that_failed(tmp_path):
    table = SqlJobTable(f"sqlite:///{tmp_path / 'jobs.db'}")
    try:
        rec = record()
        table.insert_many([NewJob(rec)])
        twice = table.insert_many([NewJob(rec)])  # the same job id again: refused
        with pytest.raises(sa.exc.IntegrityError):
            await _within(table.committed(rec.job_id))
        with pytest.raises(sa.exc.IntegrityError):
            await _within(twice)
    finally:
        await table.close()


def test_memory_commits_at_once():
    table = MemoryJobTable()
    (rec,) = table.insert_later([NewJob(record())], delay=60)
    table.update_soon(rec.job_id, state=JobState.SUCCEEDED)
    assert table.committed(rec.job_id).done() and table.committed("unknown").done()


@pytest.mark.asyncio
async def test_reads_run_in_the_stores_threads_not_the_callers(tmp_path):
    table = SqlJobTable(f"sqlite:///{tmp_path / 'jobs.db'}")
    threads: set[tuple[int, str]] = set()

    def seen(*args):
        threads.add((threading.get_ident(), threading.current_thread().name))

    sa.event.listen(table.engine, "before_cursor_execute", seen)
    try:
        with pytest.raises(JobNotFound):
            await table.get("nope")
        assert threads, "the read ran"
        assert threading.get_ident() not in {ident for ident, _ in threads}
        assert all(name.startswith("dask-compute-store") for _, name in threads), threads
        threads.clear()
        (rec,) = await _within(table.insert_many([NewJob(record(request_id="k"))]))
        await table.refresh(rec.job_id)
        await table.update(rec.job_id, state=JobState.RUNNING)
        await table.list()
        await table.states_of([rec.job_id])
        await table.find_requests("", ["k"])
        await table.unfinished()
        await table.expire_results(0.0)
        await table.count()
        await table.delete([rec.job_id])
        assert threading.get_ident() not in {ident for ident, _ in threads}
        assert all(name.startswith("dask-compute-store") for _, name in threads), threads
    finally:
        await table.close()
