"""Across replicas, one idempotency key is one job: the shared store's unique
(owner, key) index refuses a second, and the replica that lost the race answers
with the job the other stored."""

from __future__ import annotations

import time

import pytest
import pytest_asyncio

from server.app import build_registry
from server.config import Settings
from server.core import ComputeCore, JobRequest
from server.jobs import JobKind, JobRecord, JobState, NewJob, new_job_id
from server.store import SqlJobTable
from tests.helpers import postgres_server

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]


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
    )
    c = ComputeCore(settings, build_registry(settings))
    await c.start()
    yield c
    await c.close()


def add(request_id: str) -> JobRequest:
    return JobRequest(
        kind=JobKind.FUNCTION, function="add", args=[1, 2], scheduler="threads",
        request_id=request_id,
    )  # fmt: skip


async def test_the_replica_that_lost_the_race_answers_the_other_replicas_job(
    core, database, monkeypatch
):
    other = SqlJobTable(database, instance_id="other-replica")
    try:
        # The other replica stores a job with the key after this one looked it up.
        lookups = []
        looked_up = core.jobs.find_requests

        async def raced(owner, request_ids):
            found = await looked_up(owner, request_ids)
            if not lookups:
                theirs = JobRecord(
                    job_id=new_job_id(), state=JobState.SUCCEEDED, scheduler="threads",
                    kind=JobKind.FUNCTION, target="add", submit_time=time.time(),
                    finish_time=time.time(), owner=owner, request_id="raced",
                )  # fmt: skip
                other.insert_many([NewJob(theirs, None)]).result(10)
            lookups.append(request_ids)
            return found

        monkeypatch.setattr(core.jobs, "find_requests", raced)
        records = await core.submit_many([add("raced"), add("fresh"), add("raced")])
        stored = await other.find_requests(records[0].owner, ["raced", "fresh"])
        assert records[0].job_id == records[2].job_id == stored["raced"].job_id
        assert records[1].job_id == stored["fresh"].job_id != records[0].job_id
        assert len(lookups) == 2, "looked up again once the store refused the key"
        assert (await core.wait_job(records[1].job_id, 30))[0].state is JobState.SUCCEEDED
    finally:
        await other.close()
