"""A job talks to the service only through the :class:`JobLink` its client hands it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from client_sdk import AsyncJob, Job, JobCancelled, JobState, _convert
from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk._sansio import Call, advance
from client_sdk.job import JobLink
from client_sdk.types import JobInfo

Answer = Callable[[Any], Any]


def scripted(answers: dict[str, Answer]) -> tuple[Callable[[Any], Any], list[Call]]:
    """A blocking ``drive`` that answers each call from ``answers``, and the calls it saw."""
    calls: list[Call] = []

    def drive(op):
        reply = None
        while True:
            finished, step = advance(op, reply, None)
            if finished:
                return step
            calls.append(step)
            reply = answers[step.method](step.request)

    return drive, calls


def answer(response: type, state: int, **fields: Any) -> Answer:
    """Answers a request about a job with the job in ``state``."""
    return lambda request: response(job=pb.Job(job_id=request.job_id, state=state, **fields))


def no_watch(job_id: str, timeout: float | None) -> Any:
    raise AssertionError("not watched here")


def queued(job_id: str = "j1") -> JobInfo:
    return _convert.job_info(pb.Job(job_id=job_id, state=pb.JOB_STATE_QUEUED))


def test_a_job_asks_and_cancels_through_its_link_alone() -> None:
    answers = {
        "GetJob": answer(pb.GetJobResponse, pb.JOB_STATE_RUNNING),
        "CancelJob": answer(pb.CancelJobResponse, pb.JOB_STATE_CANCELLED, cancel_reason="enough"),
    }
    drive, calls = scripted(answers)
    job = Job(JobLink(drive, no_watch, lambda fn, job: fn(job)), queued())
    assert job.state() is JobState.RUNNING and job.running()
    assert job.cancel("enough") is True
    assert job.done() and job.cancelled()
    with pytest.raises(JobCancelled, match="enough"):
        job.result(timeout=0)
    assert [c.method for c in calls] == ["GetJob", "GetJob", "CancelJob"]
    assert calls[-1].request == pb.CancelJobRequest(job_id="j1", reason="enough")
    assert job.state() is JobState.CANCELLED and len(calls) == 3, "a done job asks no more"


def test_done_callbacks_of_an_unfinished_job_run_where_the_link_says() -> None:
    dispatched: list[tuple[Any, Any]] = []
    drive, _ = scripted({})
    job = Job(JobLink(drive, no_watch, lambda fn, j: dispatched.append((fn, j))), queued())
    seen: list[Job] = []
    job.add_done_callback(seen.append)
    job._settle(_convert.job_info(pb.Job(job_id="j1", state=pb.JOB_STATE_SUCCEEDED)), 7, None)
    assert dispatched == [(seen.append, job)] and seen == []
    assert job.result(timeout=0) == 7


def test_an_async_job_drives_its_operations_through_its_link() -> None:
    async def main() -> tuple[bool, bool, list[Call]]:
        blocking, calls = scripted(
            {"CancelJob": answer(pb.CancelJobResponse, pb.JOB_STATE_CANCELLED)}
        )

        async def drive(op):
            return blocking(op)

        job = AsyncJob(JobLink(drive, no_watch, lambda fn, j: fn(j)), queued("j2"))
        return await job.cancel(), job.cancelled(), calls

    cancelled, local, calls = asyncio.run(main())
    assert cancelled and local
    assert [c.request.job_id for c in calls] == ["j2"]
