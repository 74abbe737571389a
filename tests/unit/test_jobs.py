import pytest

from server.errors import InvalidArgument, JobNotFound
from server.jobs import JobKind, JobRecord, JobState, MemoryJobTable, make_page_token, new_job_id


def _record(state=JobState.QUEUED, finish_time=None):
    return JobRecord(
        job_id=new_job_id(),
        state=state,
        scheduler="threads",
        kind=JobKind.FUNCTION,
        target="ping",
        finish_time=finish_time,
    )


def test_insert_get_update():
    table = MemoryJobTable()
    rec = table.insert(_record())
    assert rec.seq == 1 and rec.submit_time > 0
    assert table.get(rec.job_id) == rec
    updated = table.update(rec.job_id, state=JobState.RUNNING)
    assert table.get(rec.job_id).state is JobState.RUNNING is updated.state
    with pytest.raises(JobNotFound, match="no job with id 'missing'"):
        table.get("missing")


def test_job_ids_are_unique_and_opaque():
    ids = {new_job_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 32 and i.isalnum() for i in ids)


def test_list_pages_newest_first_with_filter():
    table = MemoryJobTable()
    records = [table.insert(_record(JobState.SUCCEEDED if i % 2 else JobState.QUEUED)) for i in range(25)]
    seen = []
    token = ""
    pages = 0
    while True:
        page, token = table.list(page_size=10, page_token=token)
        seen.extend(page)
        pages += 1
        if not token:
            break
    assert pages == 3
    assert [r.job_id for r in seen] == [r.job_id for r in reversed(records)]
    succeeded, token = table.list([JobState.SUCCEEDED], page_size=100)
    assert token == ""
    assert len(succeeded) == 12 and all(r.state is JobState.SUCCEEDED for r in succeeded)


def test_exact_page_boundary_has_no_empty_last_page():
    table = MemoryJobTable()
    for _ in range(10):
        table.insert(_record())
    page, token = table.list(page_size=10)
    assert len(page) == 10 and token == ""


@pytest.mark.parametrize("size", [-1, 1001, 10**9])
def test_page_size_out_of_range(size):
    with pytest.raises(InvalidArgument, match="page_size must be between 0 and 1000"):
        MemoryJobTable().list(page_size=size)


@pytest.mark.parametrize("token", ["garbage", "c2VxOng=", make_page_token(3)[:-2] + "!!", "\u00e9"])
def test_bad_page_token(token):
    with pytest.raises(InvalidArgument, match="page_token is not valid"):
        MemoryJobTable().list(page_token=token)


def test_finished_before_and_delete():
    table = MemoryJobTable()
    old = table.insert(_record(JobState.SUCCEEDED, finish_time=100.0))
    new = table.insert(_record(JobState.FAILED, finish_time=200.0))
    running = table.insert(_record(JobState.RUNNING))
    assert table.finished_before(150.0) == [old.job_id]
    assert table.oldest_finished(1) == [old.job_id]
    table.delete([old.job_id])
    assert len(table) == 2
    assert {r.job_id for r in table.list()[0]} == {new.job_id, running.job_id}
