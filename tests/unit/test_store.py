"""The job table contract, on memory, SQLite and a real PostgreSQL server."""

from __future__ import annotations

import time

import pytest

from server.errors import InvalidArgument, JobNotFound
from server.jobs import JobError, JobKind, JobRecord, JobState, MemoryJobTable, new_job_id
from server.store import SqlJobTable, StoreInUse
from tests.helpers import postgres_server


@pytest.fixture(scope="module")
def postgres_url():
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def table(request, tmp_path):
    if request.param == "memory":
        yield MemoryJobTable()
        return
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'jobs.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    t = SqlJobTable(url, instance_id="test")
    import sqlalchemy as sa

    from server.store import jobs_table

    with t.engine.begin() as conn:
        conn.execute(sa.delete(jobs_table))
    yield t
    t.close()


def record(state=JobState.QUEUED, **kw):
    values = dict(
        job_id=new_job_id(),
        state=state,
        scheduler="threads",
        kind=JobKind.FUNCTION,
        target="ping",
        submit_time=1.0,
    )
    values.update(kw)
    return JobRecord(**values)


def test_insert_get_update_round_trip(table):
    error = JobError("builtins.ValueError", "bad", "Traceback...", b"\x80\x05pickled")
    rec = table.insert(record(name="n", owner="alice", request_id="r1", retryable=True))
    assert rec.seq > 0
    got = table.get(rec.job_id)
    assert got == rec
    done = table.update(rec.job_id, state=JobState.FAILED, finish_time=5.0, error=error)
    assert done.error == error and table.get(rec.job_id).error == error
    assert table.get(rec.job_id).state is JobState.FAILED
    with pytest.raises(JobNotFound):
        table.get("nope")


def test_list_pages_filters_and_owner(table):
    recs = [
        table.insert(
            record(
                state=JobState.SUCCEEDED if i % 3 == 0 else JobState.QUEUED,
                owner="a" if i % 2 else "b",
            )
        )
        for i in range(23)
    ]
    ids, token = [], ""
    while True:
        page, token = table.list(page_size=5, page_token=token)
        ids += [r.job_id for r in page]
        if not token:
            break
    assert ids == [r.job_id for r in reversed(recs)]
    succeeded, _ = table.list([JobState.SUCCEEDED], page_size=100)
    assert {r.job_id for r in succeeded} == {
        r.job_id for r in recs if r.state is JobState.SUCCEEDED
    }
    mine, _ = table.list(owner="a", page_size=100)
    assert {r.job_id for r in mine} == {r.job_id for r in recs if r.owner == "a"}
    with pytest.raises(InvalidArgument):
        table.list(page_token="junk")


def test_expiry_helpers(table):
    old = table.insert(record())
    table.update(old.job_id, state=JobState.SUCCEEDED, finish_time=10.0, result_available=True)
    new = table.insert(record())
    table.update(new.job_id, state=JobState.SUCCEEDED, finish_time=100.0, result_available=True)
    assert table.expire_results(50.0) == [old.job_id]
    assert table.get(old.job_id).result_available is False
    assert table.get(new.job_id).result_available is True
    assert table.finished_before(50.0) == [old.job_id]
    assert table.oldest_finished(1) == [old.job_id]
    table.delete([old.job_id])
    with pytest.raises(JobNotFound):
        table.get(old.job_id)
    assert len(table) == 1


def test_durable_extras(table):
    if not table.durable:
        assert table.unfinished() == [] and table.stored_result("x") is None
        return
    running = table.insert(record(retryable=True), request={"kind": "function", "function": "ping"})
    table.update(running.job_id, state=JobState.RUNNING, start_time=2.0)
    finished = table.insert(record())
    table.update(finished.job_id, state=JobState.SUCCEEDED, finish_time=3.0)
    assert [r.job_id for r in table.unfinished()] == [running.job_id]
    assert table.request_of(running.job_id) == {"kind": "function", "function": "ping"}
    table.store_result(finished.job_id, b"result-bytes")
    assert table.stored_result(finished.job_id) == b"result-bytes"
    table.update(running.job_id, state=JobState.CANCELLED, finish_time=4.0)
    assert table.request_of(running.job_id) is None, "the request is dropped when the job ends"


def test_records_survive_a_new_table_on_the_same_database(tmp_path):
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    first = SqlJobTable(url)
    rec = first.insert(record(owner="alice"))
    first.close()
    second = SqlJobTable(url)
    try:
        assert second.get(rec.job_id).owner == "alice"
    finally:
        second.close()


def test_a_sqlite_store_belongs_to_one_server(tmp_path):
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    first = SqlJobTable(url)
    try:
        with pytest.raises(StoreInUse, match="in use by another server .*--job-store"):
            SqlJobTable(url)
    finally:
        first.close()
    SqlJobTable(url).close()  # free again once the first closed


def test_insert_many_and_update_soon_are_written_in_the_background(table):
    import time as _time

    stored = table.insert_many([(record(), None), (record(), {"kind": "function"})]).result(10)
    assert [r.seq > 0 for r in stored] == [True, True] and stored[0].seq < stored[1].seq
    first, second = stored
    # The copy here changes at once; the store has it once the queue is written.
    now = table.update_soon(first.job_id, state=JobState.SUCCEEDED, finish_time=2.0)
    assert now.state is JobState.SUCCEEDED and table.get(first.job_id).state is JobState.SUCCEEDED
    page, _ = table.list([JobState.SUCCEEDED])
    assert [r.job_id for r in page] == [first.job_id], "a listing sees queued changes"
    # A deferred change is dropped when a later one of the job comes first...
    table.update_soon(second.job_id, delay=30, state=JobState.RUNNING, start_time=1.5)
    table.update_soon(second.job_id, state=JobState.FAILED, finish_time=3.0, start_time=1.5)
    if isinstance(table, SqlJobTable):
        deadline = _time.monotonic() + 10
        while table._writer.pending(second.job_id) and _time.monotonic() < deadline:
            _time.sleep(0.01)
        fresh = SqlJobTable.__new__(SqlJobTable)  # read past this process's copies
        fresh.engine, fresh._cache = table.engine, {}
        assert fresh._read(second.job_id).state is JobState.FAILED
        assert not table._writer.pending(second.job_id), "the deferred RUNNING write was dropped"
    # ...and written on its own once its time comes.
    third = table.insert_many([(record(), None)]).result(10)[0]
    table.update_soon(third.job_id, delay=0.05, state=JobState.RUNNING, start_time=4.0)
    _time.sleep(0.3)
    assert table.refresh(third.job_id).state is JobState.RUNNING


def _stored(table, job_id):
    """The record as the database has it, past this process's copies (None: not stored)."""
    fresh = SqlJobTable.__new__(SqlJobTable)
    fresh.engine, fresh._cache = table.engine, {}
    try:
        return fresh._read(job_id)
    except JobNotFound:
        return None


def test_a_record_kept_for_later_is_stored_once_finished(table):
    import time as _time

    kept, other = table.insert_later(
        [(record(request_id="k1"), None), (record(retryable=True), {"kind": "function"})], 0.3
    )
    assert table.get(kept.job_id) == kept, "this process sees it at once"
    waiting = table._writer._deferred.get(kept.job_id) if isinstance(table, SqlJobTable) else None
    table.update_soon(kept.job_id, delay=0.25, state=JobState.RUNNING, start_time=1.5)
    table.update_soon(kept.job_id, state=JobState.SUCCEEDED, finish_time=2.0)
    table.store_result(kept.job_id, None)  # a released result: nothing to drop yet
    if isinstance(table, SqlJobTable):
        assert _stored(table, kept.job_id) is None, "not stored before it is due"
        assert table._writer.pending(kept.job_id)
        if table.exclusive:
            assert table._writer._deferred[kept.job_id] is waiting, "its changes ride on that write"
        deadline = _time.monotonic() + 10
        while table._writer.pending(other.job_id) and _time.monotonic() < deadline:
            _time.sleep(0.02)
        stored = _stored(table, kept.job_id)
        assert stored is not None and stored.state is JobState.SUCCEEDED, "stored once, finished"
        assert stored.request_id == "k1" and stored.finish_time == 2.0
        assert table.get(kept.job_id).seq == stored.seq > 0
        assert table.request_of(other.job_id) == {"kind": "function"}, "its request is kept"
        assert not table._unwritten
    page, _ = table.list()
    assert {r.job_id for r in page} == {kept.job_id, other.job_id}


@pytest.mark.parametrize("table", ["memory", "sqlite"], indirect=True)
def test_listings_keep_the_order_of_acceptance_for_records_stored_later(table):
    # (The core keeps records for later only on a store of its own, which numbers them.)
    (first,) = table.insert_later([(record(), None)], 60)
    (second,) = table.insert_many([(record(), None)]).result(10)
    page, _ = table.list()
    assert [r.job_id for r in page] == [second.job_id, first.job_id], "newest first"


@pytest.mark.parametrize("table", ["sqlite", "postgresql"], indirect=True)
def test_a_kept_record_is_stored_before_its_result_and_listings(table):
    (kept,) = table.insert_later([(record(state=JobState.SUCCEEDED, finish_time=1.0), None)], 60)
    table.update_soon(kept.job_id, result_available=True)
    table.store_result(kept.job_id, b"blob")  # stores the record first, not in a minute
    table._writer.flush()
    assert table.stored_result(kept.job_id) == b"blob"
    assert _stored(table, kept.job_id).result_available is True
    (listed,) = table.insert_later([(record(), None)], 60)
    page, _ = table.list([JobState.QUEUED])
    assert [r.job_id for r in page] == [listed.job_id], "a listing stores what is kept first"
    assert _stored(table, listed.job_id).seq == table.get(listed.job_id).seq > 0


@pytest.mark.parametrize("table", ["sqlite", "postgresql"], indirect=True)
def test_a_change_of_state_loses_to_a_job_already_ended_elsewhere(table):
    import sqlalchemy as sa

    from server.store import jobs_table

    rec = table.insert(record(state=JobState.RUNNING))
    with table.engine.begin() as conn:  # another replica cancels it
        conn.execute(
            sa.update(jobs_table)
            .where(jobs_table.c.job_id == rec.job_id)
            .values(state="cancelled", cancel_reason="elsewhere", finish_time=9.0)
        )
    table.update_soon(rec.job_id, state=JobState.SUCCEEDED, finish_time=10.0)
    table._writer.flush()
    stored = _stored(table, rec.job_id)
    assert stored.state is JobState.CANCELLED and stored.cancel_reason == "elsewhere"
    if not table.exclusive:
        # A replica learns of it (on its own store a server is the only writer,
        # so it does not read its writes back; the stored record still wins).
        kept = table.get(rec.job_id)
        assert kept.state is JobState.CANCELLED and kept.cancel_reason == "elsewhere"


@pytest.mark.parametrize("table", ["memory", "sqlite", "postgresql"], indirect=True)
def test_update_stored_answers_at_once_and_tells_the_stored_word_once_written(table):
    import sqlalchemy as sa

    from server.store import jobs_table

    ended = table.insert(record(state=JobState.RUNNING))
    if isinstance(table, SqlJobTable):
        with table._lock:  # the writer cannot take the write's outcome in yet
            mine, stored = table.update_stored(
                ended.job_id, state=JobState.SUCCEEDED, finish_time=3.0
            )
            time.sleep(0.2)
            assert not stored.done() and table.get(ended.job_id).state is JobState.RUNNING
    else:
        mine, stored = table.update_stored(ended.job_id, state=JobState.SUCCEEDED, finish_time=3.0)
    assert mine.state is JobState.SUCCEEDED and mine.finish_time == 3.0
    final = stored.result(10)
    assert final == mine and table.get(ended.job_id) == final, "seen here once stored"
    if isinstance(table, SqlJobTable):
        assert _stored(table, ended.job_id).finish_time == 3.0, "committed once it is set"
    if isinstance(table, SqlJobTable) and not table.exclusive:
        # (On a store of its own a server is the only writer: it reads nothing back.)
        lost = table.insert(record(state=JobState.RUNNING))
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
        assert table.get(lost.job_id) == final, "the stored record replaced this copy"


def test_idempotency_keys_are_found_one_or_many_at_a_time(table):
    first = table.insert(record(owner="alice", request_id="k1"))
    other = table.insert(record(owner="alice", request_id="k2"))
    table.insert(record(owner="bob", request_id="k3"))
    keys = [f"many-{i}" for i in range(1200)]  # more than one query's worth
    table.insert_many([(record(owner="alice", request_id=k), None) for k in keys]).result(30)
    assert table.find_request("alice", "k1") == first
    assert table.find_request("alice", "k3") is None, "another caller's key"
    assert table.find_request("alice", "nope") is None
    found = table.find_requests("alice", ["k1", "k2", "k3", "nope", "k1"])
    assert found == {"k1": first, "k2": other}
    assert set(table.find_requests("alice", keys)) == set(keys)


@pytest.mark.parametrize("table", ["sqlite", "postgresql"], indirect=True)
def test_object_uses_are_shared_and_each_unused_object_is_taken_once(table):
    table.take_unused_objects(float("inf"))  # (a store left by an earlier test)
    table.use_objects([("alice", "o1"), ("alice", "o2")], 10.0)
    table.use_objects([("alice", "o1")], 20.0)
    table.use_objects([("alice", "o1")], 15.0)  # another replica's older use, written late
    table.use_objects([("bob", "o3")], 5.0)
    table.forget_object("bob", "o3")  # deleted
    assert table.take_unused_objects(18.0) == [("alice", "o2")]
    assert table.take_unused_objects(18.0) == [], "each is taken by one caller"
    assert table.take_unused_objects(21.0) == [("alice", "o1")], "its latest use counts"


def test_many_record_writes_go_as_one_statement(tmp_path):
    import sqlalchemy as sa

    t = SqlJobTable(f"sqlite:///{tmp_path / 'jobs.db'}", instance_id="test")
    statements = []
    sa.event.listen(
        t.engine, "before_cursor_execute", lambda *args: statements.append((args[2], args[5]))
    )
    try:
        recs = t.insert_many([(record(), None) for _ in range(50)]).result(10)
        kinds = [(text.split()[0], many) for text, many in statements]
        assert kinds == [("INSERT", True)], "one INSERT for the batch, numbered here"
        assert [r.seq for r in recs] == sorted(r.seq for r in recs) and recs[0].seq > 0
        statements.clear()
        with t._writer._cond:  # hold the writer: the changes gather into one batch
            for r in recs:
                t.update_soon(r.job_id, state=JobState.RUNNING, start_time=2.0)
                t.update_soon(r.job_id, state=JobState.SUCCEEDED, finish_time=3.0)
                t.store_result(r.job_id, b"blob")
        t._writer.flush()
        kinds = [(text.split()[0], many) for text, many in statements]
        assert kinds == [("UPDATE", True), ("UPDATE", True)], statements
        for r in recs:
            assert _stored(t, r.job_id).state is JobState.SUCCEEDED
            assert t.stored_result(r.job_id) == b"blob"
    finally:
        t.close()


def test_a_released_result_stays_released(table):
    rec = table.insert(record(state=JobState.SUCCEEDED, result_available=True))
    table.store_result(rec.job_id, b"blob")
    table.update_soon(rec.job_id, result_available=False)
    table.store_result(rec.job_id, None)
    assert table.stored_result(rec.job_id) is None
    assert table.get(rec.job_id).result_available is False


def test_a_replica_whose_lease_ran_out_has_its_jobs_taken_once(postgres_url):
    import sqlalchemy as sa

    from server.store import jobs_table, replicas_table

    a = SqlJobTable(postgres_url, instance_id="replica-a")
    b = SqlJobTable(postgres_url, instance_id="replica-b")
    c = SqlJobTable(postgres_url, instance_id="replica-c")
    try:
        with a.engine.begin() as conn:
            conn.execute(sa.delete(jobs_table))
            conn.execute(sa.delete(replicas_table))
        assert a.adopt_orphans(lease=3, now=100.0) == []
        running = a.insert(record(state=JobState.RUNNING, submit_time=100.0))
        done = a.insert(record(state=JobState.SUCCEEDED, submit_time=100.0))
        assert b.adopt_orphans(lease=3, now=102.0) == [], "A's lease still holds"
        taken = b.adopt_orphans(lease=3, now=110.0)
        assert [r.job_id for r in taken] == [running.job_id], "finished jobs stay as they are"
        assert c.adopt_orphans(lease=3, now=110.5) == [], "a job is taken once"
        with a.engine.connect() as conn:
            owners = dict(
                conn.execute(sa.select(jobs_table.c.job_id, jobs_table.c.instance_id)).all()
            )
            replicas = set(conn.execute(sa.select(replicas_table.c.instance_id)).scalars())
        assert owners == {running.job_id: "replica-b", done.job_id: "replica-a"}
        assert replicas == {"replica-b", "replica-c"}, "the dead replica's entry is gone"
        b.leave()
        with a.engine.connect() as conn:
            assert set(conn.execute(sa.select(replicas_table.c.instance_id)).scalars()) == {
                "replica-c"
            }
    finally:
        for table in (a, b, c):
            table.close()
