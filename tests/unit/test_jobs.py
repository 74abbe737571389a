import pytest

from server.errors import InvalidArgument, JobNotFound
from server.jobs import (
    JobKind,
    JobRecord,
    JobState,
    MemoryJobTable,
    NewJob,
    make_page_token,
    new_job_id,
)


def _record(state=JobState.QUEUED, finish_time=None):
    return JobRecord(
        job_id=new_job_id(),
        state=state,
        scheduler="threads",
        kind=JobKind.FUNCTION,
        target="ping",
        finish_time=finish_time,
    )


def _insert(table, record):
    (stored,) = table.insert_many([NewJob(record)]).result(0)  # in memory: done at once
    return stored


@pytest.mark.asyncio
async def test_insert_get_update():
    table = MemoryJobTable()
    rec = _insert(table, _record())
    assert rec.seq == 1 and rec.submit_time > 0
    assert await table.get(rec.job_id) == rec == table.cached(rec.job_id)
    updated = await table.update(rec.job_id, state=JobState.RUNNING)
    assert (await table.get(rec.job_id)).state is JobState.RUNNING is updated.state
    with pytest.raises(JobNotFound, match="no job with id 'missing'"):
        await table.get("missing")
    assert table.committed(rec.job_id).done(), "memory has nothing to commit"


def test_a_job_id_is_inserted_once():
    table = MemoryJobTable()
    rec = _insert(table, _record())
    with pytest.raises(ValueError, match="exists"):
        table.insert_many([NewJob(rec)]).result(0)


def test_job_ids_are_unique_and_opaque():
    ids = {new_job_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 32 and i.isalnum() for i in ids)


@pytest.mark.asyncio
async def test_list_pages_newest_first_with_filter():
    table = MemoryJobTable()
    records = [
        _insert(table, _record(JobState.SUCCEEDED if i % 2 else JobState.QUEUED)) for i in range(25)
    ]
    seen = []
    token = ""
    pages = 0
    while True:
        page, token = await table.list(page_size=10, page_token=token)
        seen.extend(page)
        pages += 1
        if not token:
            break
    assert pages == 3
    assert [r.job_id for r in seen] == [r.job_id for r in reversed(records)]
    succeeded, token = await table.list([JobState.SUCCEEDED], page_size=100)
    assert token == ""
    assert len(succeeded) == 12 and all(r.state is JobState.SUCCEEDED for r in succeeded)


@pytest.mark.asyncio
async def test_exact_page_boundary_has_no_empty_last_page():
    table = MemoryJobTable()
    for _ in range(10):
        _insert(table, _record())
    page, token = await table.list(page_size=10)
    assert len(page) == 10 and token == ""


@pytest.mark.parametrize("size", [-1, 1001, 10**9])
@pytest.mark.asyncio
async def test_page_size_out_of_range(size):
    with pytest.raises(InvalidArgument, match="page_size must be between 0 and 1000"):
        await MemoryJobTable().list(page_size=size)


@pytest.mark.parametrize("token", ["garbage", "c2VxOng=", make_page_token(3)[:-2] + "!!", "\u00e9"])
@pytest.mark.asyncio
async def test_bad_page_token(token):
    with pytest.raises(InvalidArgument, match="page_token is not valid"):
        await MemoryJobTable().list(page_token=token)


@pytest.mark.asyncio
async def test_finished_before_and_delete():
    table = MemoryJobTable()
    old = _insert(table, _record(JobState.SUCCEEDED, finish_time=100.0))
    new = _insert(table, _record(JobState.FAILED, finish_time=200.0))
    running = _insert(table, _record(JobState.RUNNING))
    assert await table.finished_before(150.0) == [old.job_id]
    assert await table.oldest_finished(1) == [old.job_id]
    await table.delete([old.job_id])
    assert await table.count() == 2
    assert {r.job_id for r in (await table.list())[0]} == {new.job_id, running.job_id}
