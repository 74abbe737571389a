"""The job table contract, on memory, SQLite and a real PostgreSQL server."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time

import pytest
import pytest_asyncio
import sqlalchemy as sa

from server.errors import InvalidArgument, JobNotFound
from server.jobs import (
    JobError,
    JobKind,
    JobRecord,
    JobState,
    MemoryJobTable,
    NewJob,
    new_job_id,
)
from server.store import SqlJobTable, StoreInUse, jobs_table, object_uses_table, replicas_table
from server.store.schema import read_record
from tests.helpers import postgres_server


@pytest.fixture(scope="module")
def postgres_url():
    with postgres_server() as url:
        yield url


@pytest_asyncio.fixture(params=["memory", "sqlite", "postgresql"])
async def table(request, tmp_path):
    if request.param == "memory":
        yield MemoryJobTable()
        return
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'jobs.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    t = SqlJobTable(url, instance_id="test")
    with t.engine.begin() as conn:
        conn.execute(sa.delete(jobs_table))
    yield t
    await t.close()


def record(state=JobState.QUEUED, **kw):
    values = {
        "job_id": new_job_id(),
        "state": state,
        "scheduler": "threads",
        "kind": JobKind.FUNCTION,
        "target": "ping",
        "submit_time": 1.0,
    }
    values.update(kw)
    return JobRecord(**values)


async def insert(table, rec, request=None):
    """Store one new record, committed; returns it with its ``seq``."""
    (stored,) = await asyncio.wait_for(
        asyncio.wrap_future(table.insert_many([NewJob(rec, request)])), 10
    )
    return stored


async def committed(table, job_id):
    """Wait (at most 10 s) until every write of ``job_id`` queued so far is committed."""
    await asyncio.wait_for(asyncio.wrap_future(table.committed(job_id)), 10)


def _stored(table, job_id):
    """The record as the database has it, past this process's copies (None: not stored)."""
    with table.engine.connect() as conn:
        return read_record(conn, job_id)


@contextlib.contextmanager
def _statements_of(table, job_id):
    """The statements (verb, parameters) run on ``job_id``'s row while inside."""
    seen = []

    def listen(conn, cursor, statement, parameters, context, executemany):
        for row in parameters if executemany else [parameters]:
            if job_id in str(row):
                seen.append((statement.split()[0], str(row)))

    sa.event.listen(table.engine, "before_cursor_execute", listen)
    try:
        yield seen
    finally:
        sa.event.remove(table.engine, "before_cursor_execute", listen)


@contextlib.contextmanager
def _row_locked(table, job_id):
    """Another connection holds ``job_id``'s row (all of SQLite's) for writing while inside."""
    if table.engine.dialect.name == "sqlite":
        raw = table.engine.raw_connection()
        try:
            raw.cursor().execute("BEGIN IMMEDIATE")
            yield
        finally:
            raw.rollback()
            raw.close()
        return
    with table.engine.connect() as conn:
        conn.execute(
            sa.select(jobs_table.c.seq).where(jobs_table.c.job_id == job_id).with_for_update()
        )
        yield
        conn.rollback()


@pytest.mark.asyncio
async def test_insert_get_update_round_trip(table):
    error = JobError("builtins.ValueError", "bad", "Traceback...", b"\x80\x05pickled")
    rec = await insert(table, record(name="n", owner="alice", request_id="r1", retryable=True))
    assert rec.seq > 0
    got = await table.get(rec.job_id)
    assert got == rec and table.cached(rec.job_id) == rec
    done = await table.update(rec.job_id, state=JobState.FAILED, finish_time=5.0, error=error)
    assert done.error == error and (await table.get(rec.job_id)).error == error
    assert (await table.get(rec.job_id)).state is JobState.FAILED
    with pytest.raises(JobNotFound):
        await table.get("nope")
    assert table.cached("nope") is None


@pytest.mark.asyncio
async def test_list_pages_filters_and_owner(table):
    recs = [
        await insert(
            table,
            record(
                state=JobState.SUCCEEDED if i % 3 == 0 else JobState.QUEUED,
                owner="a" if i % 2 else "b",
            ),
        )
        for i in range(23)
    ]
    ids, token = [], ""
    while True:
        page, token = await table.list(page_size=5, page_token=token)
        ids += [r.job_id for r in page]
        if not token:
            break
    assert ids == [r.job_id for r in reversed(recs)]
    succeeded, _ = await table.list([JobState.SUCCEEDED], page_size=100)
    assert {r.job_id for r in succeeded} == {
        r.job_id for r in recs if r.state is JobState.SUCCEEDED
    }
    mine, _ = await table.list(owner="a", page_size=100)
    assert {r.job_id for r in mine} == {r.job_id for r in recs if r.owner == "a"}
    with pytest.raises(InvalidArgument):
        await table.list(page_token="junk")


@pytest.mark.asyncio
async def test_expiry_helpers(table):
    old = await insert(table, record())
    await table.update(
        old.job_id, state=JobState.SUCCEEDED, finish_time=10.0, result_available=True
    )
    new = await insert(table, record())
    await table.update(
        new.job_id, state=JobState.SUCCEEDED, finish_time=100.0, result_available=True
    )
    assert await table.expire_results(50.0) == [old.job_id]
    assert (await table.get(old.job_id)).result_available is False
    assert (await table.get(new.job_id)).result_available is True
    assert await table.finished_before(50.0) == [old.job_id]
    assert await table.oldest_finished(1) == [old.job_id]
    await table.delete([old.job_id])
    with pytest.raises(JobNotFound):
        await table.get(old.job_id)
    assert await table.count() == 1


@pytest.mark.asyncio
async def test_durable_extras(table):
    if not table.durable:
        assert await table.unfinished() == [] and await table.stored_result("x") is None
        return
    running = await insert(
        table, record(retryable=True), request={"kind": "function", "function": "ping"}
    )
    await table.update(running.job_id, state=JobState.RUNNING, start_time=2.0)
    finished = await insert(table, record())
    await table.update(finished.job_id, state=JobState.SUCCEEDED, finish_time=3.0)
    assert [r.job_id for r in await table.unfinished()] == [running.job_id]
    assert await table.request_of(running.job_id) == {"kind": "function", "function": "ping"}
    table.store_result(finished.job_id, b"result-bytes")
    assert await table.stored_result(finished.job_id) == b"result-bytes"
    await table.update(running.job_id, state=JobState.CANCELLED, finish_time=4.0)
    assert await table.request_of(running.job_id) is None, "the request is dropped when it ends"


@pytest.mark.asyncio
async def test_records_survive_a_new_table_on_the_same_database(tmp_path):
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    first = SqlJobTable(url)
    rec = await insert(first, record(owner="alice"))
    await first.close()
    second = SqlJobTable(url)
    try:
        assert second.cached(rec.job_id) is None
        assert (await second.get(rec.job_id)).owner == "alice"
        assert second.cached(rec.job_id).owner == "alice", "a record read is kept"
    finally:
        await second.close()


@pytest.mark.asyncio
async def test_a_sqlite_store_belongs_to_one_server(tmp_path):
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    first = SqlJobTable(url)
    try:
        with pytest.raises(StoreInUse, match="in use by another server .*--job-store"):
            SqlJobTable(url)
    finally:
        await first.close()
    await SqlJobTable(url).close()  # free again once the first closed


@pytest.mark.asyncio
async def test_insert_many_and_update_soon_are_written_in_the_background(table):
    stored = await asyncio.wrap_future(
        table.insert_many([NewJob(record()), NewJob(record(), {"kind": "function"})])
    )
    assert [r.seq > 0 for r in stored] == [True, True] and stored[0].seq < stored[1].seq
    first, second = stored
    # The copy here changes at once; the store has it once the queue is written.
    now = table.update_soon(first.job_id, state=JobState.SUCCEEDED, finish_time=2.0)
    assert now.state is JobState.SUCCEEDED
    assert (await table.get(first.job_id)).state is JobState.SUCCEEDED
    page, _ = await table.list([JobState.SUCCEEDED])
    assert [r.job_id for r in page] == [first.job_id], "a listing sees queued changes"
    # A deferred change is dropped when a later one of the job comes first...
    table.update_soon(second.job_id, delay=30, state=JobState.RUNNING, start_time=1.5)
    table.update_soon(second.job_id, state=JobState.FAILED, finish_time=3.0, start_time=1.5)
    await committed(table, second.job_id)
    if isinstance(table, SqlJobTable):
        assert _stored(table, second.job_id).state is JobState.FAILED
    assert table.committed(second.job_id).done(), "the deferred RUNNING write was dropped"
    # ...and written on its own once its time comes.
    third = await insert(table, record())
    table.update_soon(third.job_id, delay=0.05, state=JobState.RUNNING, start_time=4.0)
    await committed(table, third.job_id)
    if isinstance(table, SqlJobTable):
        assert _stored(table, third.job_id).state is JobState.RUNNING
    assert (await table.refresh(third.job_id)).state is JobState.RUNNING


@pytest.mark.asyncio
async def test_a_record_kept_for_later_is_stored_once_finished(table):
    kept, other = table.insert_later(
        [NewJob(record(request_id="k1")), NewJob(record(retryable=True), {"kind": "function"})],
        60,
    )
    assert table.cached(kept.job_id) == kept, "this process sees it at once"
    assert await table.get(kept.job_id) == kept
    sql = isinstance(table, SqlJobTable)
    with contextlib.ExitStack() as stack:
        writes = stack.enter_context(_statements_of(table, kept.job_id)) if sql else []
        table.update_soon(kept.job_id, delay=0.25, state=JobState.RUNNING, start_time=1.5)
        if sql:
            assert _stored(table, kept.job_id) is None, "not stored before it is due"
            assert not table.committed(kept.job_id).done()
        table.update_soon(kept.job_id, state=JobState.SUCCEEDED, finish_time=2.0)
        table.store_result(kept.job_id, None)  # a released result: nothing to drop yet
        # Due at once once finished, though kept for a minute.
        await committed(table, kept.job_id)
    if sql:
        inserts = [row for verb, row in writes if verb == "INSERT"]
        assert len(inserts) == 1 and "'succeeded'" in inserts[0], "stored once, finished"
        states = ("'state': 'running'", "'v_state': 'running'")
        assert not any(s in row for _, row in writes for s in states), "RUNNING is never written"
        stored = _stored(table, kept.job_id)
        assert stored.state is JobState.SUCCEEDED and stored.start_time == 1.5
        assert stored.request_id == "k1" and stored.finish_time == 2.0
        assert table.cached(kept.job_id).seq == stored.seq > 0
        assert _stored(table, other.job_id) is None, "the unfinished one waits for its time"
        assert await table.request_of(other.job_id) == {"kind": "function"}, "its request is kept"
    page, _ = await table.list()
    assert {r.job_id for r in page} == {kept.job_id, other.job_id}
    if sql:
        assert _stored(table, other.job_id) is not None, "a listing stores what is kept first"
        assert await table.request_of(other.job_id) == {"kind": "function"}


@pytest.mark.parametrize("table", ["memory", "sqlite"], indirect=True)
@pytest.mark.asyncio
async def test_listings_keep_the_order_of_acceptance_for_records_stored_later(table):
    # (The core keeps records for later only on a store of its own, which numbers them.)
    (first,) = table.insert_later([NewJob(record())], 60)
    second = await insert(table, record())
    page, _ = await table.list()
    assert [r.job_id for r in page] == [second.job_id, first.job_id], "newest first"


@pytest.mark.parametrize("table", ["sqlite", "postgresql"], indirect=True)
@pytest.mark.asyncio
async def test_a_kept_record_is_stored_before_its_result_and_listings(table):
    (kept,) = table.insert_later([NewJob(record(state=JobState.RUNNING))], 60)
    table.update_soon(kept.job_id, result_available=True)
    table.store_result(kept.job_id, b"blob")  # stores the record first, not in a minute
    await committed(table, kept.job_id)
    assert await table.stored_result(kept.job_id) == b"blob"
    assert _stored(table, kept.job_id).result_available is True
    (listed,) = table.insert_later([NewJob(record())], 60)
    page, _ = await table.list([JobState.QUEUED])
    assert [r.job_id for r in page] == [listed.job_id], "a listing stores what is kept first"
    assert _stored(table, listed.job_id).seq == table.cached(listed.job_id).seq > 0


@pytest.mark.parametrize("table", ["sqlite", "postgresql"], indirect=True)
@pytest.mark.asyncio
async def test_a_change_of_state_loses_to_a_job_already_ended_elsewhere(table):
    rec = await insert(table, record(state=JobState.RUNNING))
    with table.engine.begin() as conn:  # another replica cancels it
        conn.execute(
            sa.update(jobs_table)
            .where(jobs_table.c.job_id == rec.job_id)
            .values(state="cancelled", cancel_reason="elsewhere", finish_time=9.0)
        )
    table.update_soon(rec.job_id, state=JobState.SUCCEEDED, finish_time=10.0)
    await committed(table, rec.job_id)
    stored = _stored(table, rec.job_id)
    assert stored.state is JobState.CANCELLED and stored.cancel_reason == "elsewhere"
    if not table.exclusive:
        # A replica learns of it (on its own store a server is the only writer,
        # so it does not read its writes back; the stored record still wins).
        kept = await table.get(rec.job_id)
        assert kept.state is JobState.CANCELLED and kept.cancel_reason == "elsewhere"


@pytest.mark.asyncio
async def test_update_stored_answers_at_once_and_tells_the_stored_word_once_written(table):
    ended = await insert(table, record(state=JobState.RUNNING))
    if isinstance(table, SqlJobTable):
        with _row_locked(table, ended.job_id):  # the write cannot commit yet
            mine, stored = table.update_stored(
                ended.job_id, state=JobState.SUCCEEDED, finish_time=3.0
            )
            with pytest.raises(concurrent.futures.TimeoutError):
                stored.result(0.2)
            assert table.cached(ended.job_id).state is JobState.RUNNING
            assert not table.committed(ended.job_id).done()
    else:
        mine, stored = table.update_stored(ended.job_id, state=JobState.SUCCEEDED, finish_time=3.0)
    assert mine.state is JobState.SUCCEEDED and mine.finish_time == 3.0
    final = stored.result(10)
    assert final == mine and await table.get(ended.job_id) == final, "seen here once stored"
    if isinstance(table, SqlJobTable):
        assert _stored(table, ended.job_id).finish_time == 3.0, "committed once it is set"
    if isinstance(table, SqlJobTable) and not table.exclusive:
        # (On a store of its own a server is the only writer: it reads nothing back.)
        lost = await insert(table, record(state=JobState.RUNNING))
        with table.engine.begin() as conn:  # another replica cancels it first
            conn.execute(
                sa.update(jobs_table)
                .where(jobs_table.c.job_id == lost.job_id)
                .values(state="cancelled", cancel_reason="elsewhere", finish_time=9.0)
            )
        mine, stored = table.update_stored(lost.job_id, state=JobState.SUCCEEDED, finish_time=10.0)
        assert mine.state is JobState.SUCCEEDED
        final = stored.result(10)
        assert final.state is JobState.CANCELLED and final.cancel_reason == "elsewhere"
        assert await table.get(lost.job_id) == final, "the stored record replaced this copy"


@pytest.mark.asyncio
async def test_changes_need_a_copy_here(table):
    with pytest.raises(JobNotFound):
        table.update_soon("nope", state=JobState.RUNNING)
    with pytest.raises(JobNotFound):
        table.update_stored("nope", state=JobState.RUNNING)
    with pytest.raises(JobNotFound):
        await table.update("nope", state=JobState.RUNNING)


@pytest.mark.asyncio
async def test_idempotency_keys_are_found_one_or_many_at_a_time(table):
    first = await insert(table, record(owner="alice", request_id="k1"))
    other = await insert(table, record(owner="alice", request_id="k2"))
    await insert(table, record(owner="bob", request_id="k3"))
    keys = [f"many-{i}" for i in range(1200)]  # more than one query's worth
    many = table.insert_many([NewJob(record(owner="alice", request_id=k)) for k in keys])
    await asyncio.wait_for(asyncio.wrap_future(many), 30)
    assert await table.find_request("alice", "k1") == first
    assert await table.find_request("alice", "k3") is None, "another caller's key"
    assert await table.find_request("alice", "nope") is None
    found = await table.find_requests("alice", ["k1", "k2", "k3", "nope", "k1"])
    assert found == {"k1": first, "k2": other}
    assert set(await table.find_requests("alice", keys)) == set(keys)


@pytest.mark.parametrize("table", ["postgresql"], indirect=True)
@pytest.mark.asyncio
async def test_object_uses_are_shared_and_each_unused_object_is_taken_once(table):
    registry = table.registry
    await registry.take_unused_objects(-1e12)  # (a store left by an earlier test)
    registry.use_objects([("alice", "o1"), ("alice", "o2")], now=10.0)
    registry.use_objects([("alice", "o1")], now=20.0)
    registry.use_objects([("alice", "o1")], now=15.0)  # another replica's older use, written late
    registry.use_objects([("bob", "o3")], now=5.0)
    registry.forget_object("bob", "o3")  # deleted
    assert await registry.take_unused_objects(2.0, now=20.0) == [("alice", "o2")]
    assert await registry.take_unused_objects(2.0, now=20.0) == [], "each is taken by one caller"
    assert await registry.take_unused_objects(2.0, now=23.0) == [("alice", "o1")], (
        "its latest use counts"
    )


def _object_uses(table):
    """Each recorded use's ``last_used``, and the database's clock now (seconds since the epoch)."""
    now = sa.cast(sa.func.extract("epoch", sa.func.now()), sa.Float)
    with table.engine.connect() as conn:
        uses = dict(
            conn.execute(
                sa.select(object_uses_table.c.object_id, object_uses_table.c.last_used)
            ).all()
        )
        return uses, conn.execute(sa.select(now)).scalar()


@pytest.mark.parametrize("table", ["postgresql"], indirect=True)
@pytest.mark.asyncio
async def test_object_uses_are_stamped_and_judged_by_the_databases_clock(table, monkeypatch):
    registry = table.registry
    await registry.take_unused_objects(-1e12)  # (a store left by an earlier test)
    real = time.time
    ttl = 60.0
    # A replica whose clock is an hour behind uses an object: the use is now.
    monkeypatch.setattr(time, "time", lambda: real() - 3600)
    registry.use_objects([("alice", "behind")])
    await registry.take_unused_objects(ttl)  # (stores what is queued first)
    uses, db_now = _object_uses(table)
    assert abs(uses["behind"] - db_now) < 10, "a use is stamped with the database's clock"
    # A replica whose clock is right, or an hour ahead, finds it used within its ttl.
    monkeypatch.setattr(time, "time", real)
    assert await registry.take_unused_objects(ttl) == [], "an object used now expired early"
    monkeypatch.setattr(time, "time", lambda: real() + 3600)
    assert await registry.take_unused_objects(ttl) == [], (
        "a replica whose clock is ahead expired an object used now"
    )
    # Nor does its own use keep an object alive an hour past its ttl.
    registry.use_objects([("alice", "ahead")])
    monkeypatch.setattr(time, "time", real)
    later = db_now + ttl + 20
    assert sorted(await registry.take_unused_objects(ttl, now=later)) == [
        ("alice", "ahead"),
        ("alice", "behind"),
    ], "a use by a replica whose clock is ahead kept the object past its ttl"
    # A use stamped in the past (a sweep that could not unpublish it) is due at once.
    registry.use_objects([("alice", "again")], ago=ttl + 1)
    assert await registry.take_unused_objects(ttl) == [("alice", "again")]


@pytest.mark.asyncio
async def test_many_record_writes_go_as_one_statement(tmp_path):
    t = SqlJobTable(f"sqlite:///{tmp_path / 'jobs.db'}", instance_id="test")
    statements = []
    sa.event.listen(
        t.engine, "before_cursor_execute", lambda *args: statements.append((args[2], args[5]))
    )
    try:
        recs = await asyncio.wrap_future(t.insert_many([NewJob(record()) for _ in range(50)]))
        kinds = [(text.split()[0], many) for text, many in statements]
        assert kinds == [("INSERT", True)], "one INSERT for the batch, numbered here"
        assert [r.seq for r in recs] == sorted(r.seq for r in recs) and recs[0].seq > 0
        statements.clear()
        with t._writer._cond:  # hold the writer: the changes gather into one batch
            for r in recs:
                t.update_soon(r.job_id, state=JobState.RUNNING, start_time=2.0)
                t.update_soon(r.job_id, state=JobState.SUCCEEDED, finish_time=3.0)
                t.store_result(r.job_id, b"blob")
        for r in recs:
            await committed(t, r.job_id)
        kinds = [(text.split()[0], many) for text, many in statements]
        assert kinds == [("UPDATE", True), ("UPDATE", True)], statements
        for r in recs:
            assert _stored(t, r.job_id).state is JobState.SUCCEEDED
            assert await t.stored_result(r.job_id) == b"blob"
    finally:
        await t.close()


@pytest.mark.asyncio
async def test_a_released_result_stays_released(table):
    rec = await insert(table, record(state=JobState.SUCCEEDED, result_available=True))
    table.store_result(rec.job_id, b"blob")
    table.update_soon(rec.job_id, result_available=False)
    table.store_result(rec.job_id, None)
    assert await table.stored_result(rec.job_id) is None
    assert (await table.get(rec.job_id)).result_available is False


@pytest.mark.asyncio
async def test_a_replica_whose_lease_ran_out_has_its_jobs_taken_once(postgres_url):
    a = SqlJobTable(postgres_url, instance_id="replica-a")
    b = SqlJobTable(postgres_url, instance_id="replica-b")
    c = SqlJobTable(postgres_url, instance_id="replica-c")
    try:
        with a.engine.begin() as conn:
            conn.execute(sa.delete(jobs_table))
            conn.execute(sa.delete(replicas_table))
        assert await a.registry.adopt_orphans(lease=3, now=100.0) == []
        running = await insert(a, record(state=JobState.RUNNING, submit_time=100.0))
        done = await insert(a, record(state=JobState.SUCCEEDED, submit_time=100.0))
        assert await b.registry.adopt_orphans(lease=3, now=102.0) == [], "A's lease still holds"
        taken = await b.registry.adopt_orphans(lease=3, now=110.0)
        assert [r.job_id for r in taken] == [running.job_id], "finished jobs stay as they are"
        assert await c.registry.adopt_orphans(lease=3, now=110.5) == [], "a job is taken once"
        with a.engine.connect() as conn:
            owners = dict(
                conn.execute(sa.select(jobs_table.c.job_id, jobs_table.c.instance_id)).all()
            )
            replicas = set(conn.execute(sa.select(replicas_table.c.instance_id)).scalars())
        assert owners == {running.job_id: "replica-b", done.job_id: "replica-a"}
        assert replicas == {"replica-b", "replica-c"}, "the dead replica's entry is gone"
        await b.registry.leave()
        with a.engine.connect() as conn:
            assert set(conn.execute(sa.select(replicas_table.c.instance_id)).scalars()) == {
                "replica-c"
            }
    finally:
        for table in (a, b, c):
            await table.close()


@pytest.mark.asyncio
async def test_a_replica_whose_job_was_adopted_cannot_store_its_result(postgres_url):
    a = SqlJobTable(postgres_url, instance_id="replica-a")
    b = SqlJobTable(postgres_url, instance_id="replica-b")
    told = []
    try:
        with a.engine.begin() as conn:
            conn.execute(sa.delete(jobs_table))
            conn.execute(sa.delete(replicas_table))
        kept = await insert(a, record(state=JobState.RUNNING, submit_time=100.0))
        a.store_result(kept.job_id, b"a's result", lambda: told.append(kept.job_id))
        await committed(a, kept.job_id)
        assert await a.stored_result(kept.job_id) == b"a's result", "a job it holds: stored"

        lost = await insert(a, record(state=JobState.RUNNING, submit_time=100.0))
        taken = await b.registry.adopt_orphans(lease=3, now=110.0)  # A's lease ran out
        assert lost.job_id in {r.job_id for r in taken}
        a.store_result(lost.job_id, b"a's stale result", lambda: told.append(lost.job_id))
        await committed(a, lost.job_id)
        assert await b.stored_result(lost.job_id) is None, (
            "a replica whose job was adopted stored a result for it"
        )
        b.store_result(lost.job_id, b"b's result")
        await committed(b, lost.job_id)
        a.store_result(lost.job_id, b"a's stale result again")
        await committed(a, lost.job_id)
        assert await b.stored_result(lost.job_id) == b"b's result", "the adopter's result stands"
        assert told == [kept.job_id], "the lost job's result was said to be stored"

        # A caller's release through any replica drops the result.
        a.store_result(lost.job_id, None)
        await committed(a, lost.job_id)
        assert await b.stored_result(lost.job_id) is None
    finally:
        for table in (a, b):
            await table.close()
