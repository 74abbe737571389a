"""Replicas sharing a real PostgreSQL store: a replica whose jobs another adopted
is fenced off them (a Run of such a job answers with the adopter's end), leases
are judged by the database's clock, and waiting on
other replicas' jobs costs one query per round, not one per job.

The replica under test is a real core on the store; the others are job tables
of their own on it (``SqlJobTable`` with their instance id), doing what a
replica would: renewing their lease, adopting orphans, re-running and ending
jobs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

import pytest
import pytest_asyncio
import sqlalchemy as sa

from server.app import build_registry
from server.config import Settings
from server.core import ComputeCore, JobRequest
from server.jobs import JobError, JobKind, JobRecord, JobState, NewJob, new_job_id
from server.store import SqlJobTable, jobs_table, replicas_table
from tests.helpers import async_wait_until, postgres_server

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

LEASE = 3.0  # the shortest lease (renewed every second)


@pytest.fixture(scope="module")
def database():
    with postgres_server() as url:
        yield url


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def core(database):
    settings = Settings(
        job_store=database,
        n_workers=1,
        threads_per_worker=1,
        processes=False,
        dashboard_address="",
        local_processes=1,
        replica_lease=LEASE,
    )
    c = ComputeCore(settings, build_registry(settings))
    await c.start()
    yield c
    await c.close()


@pytest_asyncio.fixture(loop_scope="module")
async def other(database):
    """Another replica's job table on the same store."""
    table = SqlJobTable(database, instance_id=f"replica-{new_job_id()[:8]}")
    yield table
    await table.close()


def sleep_request(seconds: float) -> JobRequest:
    return JobRequest(
        kind=JobKind.FUNCTION, function="sleep", args=[seconds], scheduler="threads"
    )  # fmt: skip


def running_record(owner: str = "") -> JobRecord:
    return JobRecord(
        job_id=new_job_id(), state=JobState.RUNNING, scheduler="threads", kind=JobKind.FUNCTION,
        target="sleep", submit_time=time.time(), start_time=time.time(), owner=owner,
    )  # fmt: skip


def row(engine: sa.Engine, job_id: str) -> tuple[str, str]:
    """The stored state of a job and the instance that holds it."""
    with engine.connect() as conn:
        found = conn.execute(
            sa.select(jobs_table.c.state, jobs_table.c.instance_id).where(
                jobs_table.c.job_id == job_id
            )
        ).one()
    return found.state, found.instance_id


def lease_of(engine: sa.Engine, instance_id: str) -> tuple[float, float] | None:
    """A replica's ``last_seen``, and the database's clock now (seconds since the epoch)."""
    now = sa.cast(sa.func.extract("epoch", sa.func.now()), sa.Float)
    with engine.connect() as conn:
        found = conn.execute(
            sa.select(replicas_table.c.last_seen, now.label("now")).where(
                replicas_table.c.instance_id == instance_id
            )
        ).first()
    return None if found is None else (found.last_seen, found.now)


async def renewals(engine: sa.Engine, instance_id: str, count: int) -> None:
    """Wait until the replica has renewed its lease ``count`` more times."""
    seen = [lease_of(engine, instance_id)]

    def renewed() -> bool:
        now = lease_of(engine, instance_id)
        if now is not None and now[0] != (seen[-1] or (None,))[0]:
            seen.append(now)
        return len(seen) > count

    await async_wait_until(renewed, timeout=LEASE * (count + 2), message="lease renewals")


async def test_a_replica_whose_job_was_adopted_cannot_overwrite_the_adopters_end(
    core, other, caplog
):
    engine = other.engine
    record = await core.submit(sleep_request(1.5))
    job_id = record.job_id
    await async_wait_until(lambda: row(engine, job_id)[0] == "running", message="running")
    waiter = asyncio.create_task(core.wait_job(job_id, 60))

    # The other replica judges this one dead (as after a long pause of it) and
    # adopts its job, then re-runs it, as its recovery would.
    taken = await other.registry.adopt_orphans(LEASE, now=time.time() + 3600)
    assert job_id in {r.job_id for r in taken}
    assert row(engine, job_id)[1] == other.instance_id
    await other.update(job_id, state=JobState.QUEUED, start_time=None)

    # This replica's work on the job ends (or it notices the adoption first):
    # its end must not be recorded.
    with caplog.at_level(logging.WARNING, logger="server.replicas"):
        await async_wait_until(
            lambda: row(engine, job_id)[0] != "queued" or "its end here is dropped" in caplog.text,
            timeout=30,
            message="this replica's end of the job it lost",
        )
    assert row(engine, job_id) == ("queued", other.instance_id), (
        "the end of a replica whose job was adopted was recorded over the adopter's run"
    )
    assert not waiter.done(), "this replica's waiter was told of an end the store does not hold"

    # The adopter's end is the job's end, and what this replica's waiter is told.
    error = JobError(type="ReplicaLost", message="the adopter's end")
    ended = await other.update(job_id, state=JobState.FAILED, finish_time=time.time(), error=error)
    assert ended.state is JobState.FAILED and ended.error == error
    told, timed_out = await asyncio.wait_for(waiter, 30)
    assert not timed_out and told.state is JobState.FAILED and told.error == error
    assert (await core.get_job(job_id)).state is JobState.FAILED
    assert row(engine, job_id) == ("failed", other.instance_id)


async def test_leases_are_judged_by_the_databases_clock(core, other, monkeypatch):
    engine = other.engine
    me = core.instance_id
    real = time.time

    async def stay_alive() -> None:  # the other replica renews by its (true) clock
        while True:
            await other.registry.adopt_orphans(LEASE, now=real())
            await asyncio.sleep(0.5)

    theirs = running_record()
    other.insert_many([NewJob(theirs, None)]).result(10)
    alive = asyncio.create_task(stay_alive())
    try:
        # This replica's clock runs an hour ahead: it must not judge the other dead.
        monkeypatch.setattr(time, "time", lambda: real() + 3600)
        await renewals(engine, me, 2)
        assert row(engine, theirs.job_id) == ("running", other.instance_id), (
            "a replica whose clock is ahead adopted a live replica's job"
        )
        last_seen, db_now = lease_of(engine, me)
        assert abs(last_seen - db_now) < 10, "its lease is written by the database's clock"

        # An hour behind: the other replica (true clock) must not judge this one dead.
        monkeypatch.setattr(time, "time", lambda: real() - 3600)
        mine = await core.submit(sleep_request(10))
        await renewals(engine, me, 2)
        assert row(engine, mine.job_id)[1] == me, (
            "a replica whose clock is behind was judged dead and its job adopted"
        )
        last_seen, db_now = lease_of(engine, me)
        assert abs(last_seen - db_now) < 10, "its lease is written by the database's clock"
        monkeypatch.setattr(time, "time", real)
        await core.cancel_job(mine.job_id, "done with it")
    finally:
        monkeypatch.setattr(time, "time", real)
        alive.cancel()
        await asyncio.gather(alive, return_exceptions=True)
        await other.update(theirs.job_id, state=JobState.CANCELLED, finish_time=real())


class Statements:
    """Counts the statements an engine sends that name any of some job ids."""

    def __init__(self, engine: sa.Engine, job_ids: list[str]) -> None:
        self.engine = engine
        self.ids = set(job_ids)
        self.count = 0

    def __enter__(self) -> Statements:  # noqa: PYI034
        sa.event.listen(self.engine, "before_cursor_execute", self._seen)
        return self

    def __exit__(self, *exc: object) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self._seen)

    def _seen(self, conn, cursor, statement, parameters, context, executemany) -> None:
        if self.ids.intersection(_strings(parameters)):
            self.count += 1


def _strings(parameters: object) -> list[str]:
    """The string values among a statement's parameters (a dict, or a list of them)."""
    if isinstance(parameters, str):
        return [parameters]
    if isinstance(parameters, dict):
        parameters = list(parameters.values())
    if isinstance(parameters, (list, tuple)):
        return [s for p in parameters for s in _strings(p)]
    return []


async def test_waiting_on_other_replicas_jobs_is_one_query_per_round(core, other):
    records = [running_record() for _ in range(50)]
    other.insert_many([NewJob(r, None) for r in records]).result(10)
    ids = [r.job_id for r in records]
    # The other replica is alive for the whole test (nobody adopts its jobs).
    with other.engine.begin() as conn:
        conn.execute(
            replicas_table.insert().values(
                instance_id=other.instance_id, last_seen=time.time() + 3600
            )
        )
    try:
        await core.wait_jobs(ids, 0.01)  # (the first read of each record)
        with Statements(core.jobs.engine, ids) as one:
            started = time.monotonic()
            finished, timed_out = await core.wait_jobs(ids, 3.0)
            took = time.monotonic() - started
        assert finished == [] and timed_out and took >= 3.0
        # Pauses of 50 ms doubling up to 1 s: 7 rounds in 3 s (with the first look).
        assert one.count <= 10, f"{one.count} queries for 50 jobs waited on for 3 s"

        # Waiters whose pauses end together share each look; so do WatchJob's.
        with Statements(core.jobs.engine, ids) as many:
            await asyncio.gather(
                *(core.wait_jobs(ids, 3.0) for _ in range(5)),
                *(core.wait_job(job_id, 3.0) for job_id in ids[:20]),
            )
        assert many.count <= 20, f"{many.count} queries for 25 waiters on them for 3 s"

        # A job that ends is seen at the next look.
        error = JobError(type="Failed", message="ended elsewhere")
        await other.update(ids[7], state=JobState.FAILED, finish_time=time.time(), error=error)
        finished, timed_out = await core.wait_jobs(ids, 10.0)
        assert not timed_out and [r.job_id for r in finished] == [ids[7]]
        assert finished[0].error == error
    finally:
        for job_id in ids:
            other.update_soon(job_id, state=JobState.CANCELLED, finish_time=time.time())
        await asyncio.wrap_future(other.committed(ids[-1]))


def job_of_run(engine: sa.Engine, key: str) -> str | None:
    """The id of the job submitted with idempotency key ``key``, once it runs."""
    with engine.connect() as conn:
        return conn.execute(
            sa.select(jobs_table.c.job_id).where(
                jobs_table.c.request_id == key, jobs_table.c.state == "running"
            )
        ).scalar()


async def adopted_run(core, other, caplog) -> tuple[asyncio.Task, str]:
    """A ``Run`` of a job that another replica adopted, once this replica let it go."""
    key = f"adopted-run-{new_job_id()[:8]}"
    request = dataclasses.replace(sleep_request(1.5), request_id=key)
    caplog.clear()
    run = asyncio.create_task(core.run(request))
    job_id = await async_wait_until(lambda: job_of_run(other.engine, key), message="its job")
    # Another replica judges this one dead and adopts the job, re-running it.
    taken = await other.registry.adopt_orphans(LEASE, now=time.time() + 3600)
    assert job_id in {r.job_id for r in taken}
    await other.update(job_id, state=JobState.RUNNING, start_time=time.time())
    # This replica's run of it ends (or it notices the adoption first).
    await async_wait_until(
        lambda: "its end here is dropped" in caplog.text, timeout=30, message="it lets it go"
    )
    done, _ = await asyncio.wait({run}, timeout=1.0)
    assert not done, f"the Run answered before the adopter ended the job: {run.result()}"
    return run, job_id


async def test_a_run_whose_job_was_adopted_answers_with_the_adopters_end(core, other, caplog):
    caplog.set_level(logging.WARNING, logger="server.replicas")
    run, job_id = await adopted_run(core, other, caplog)
    error = JobError(type="ReplicaLost", message="the adopter's end of a Run's job")
    await other.update(job_id, state=JobState.FAILED, finish_time=time.time(), error=error)
    answered = await asyncio.wait_for(run, 30)
    assert answered.job_id == job_id
    assert answered.state is JobState.FAILED and answered.error == error

    # A Run whose caller goes away while the adopter runs its job cancels it there.
    run, job_id = await adopted_run(core, other, caplog)
    run.cancel()
    await asyncio.gather(run, return_exceptions=True)
    await async_wait_until(
        lambda: row(other.engine, job_id)[0] == "cancelled", message="the adopted job cancelled"
    )
    assert row(other.engine, job_id)[1] == other.instance_id
