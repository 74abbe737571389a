"""The watch logic both clients share: reopening streams, repeats, deadlines."""

from __future__ import annotations

import time

import pytest

from client_sdk._ops import RESULT_STREAM_ATTEMPTS, Watching
from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk.errors import (
    DeadlineExceeded,
    JobNotFound,
    JobTimeout,
    ServiceUnavailable,
    StatusCode,
)
from client_sdk.types import JobState


def message(state=pb.JOB_STATE_RUNNING, done=1, total=4):
    return pb.WatchJobResponse(
        job=pb.Job(job_id="j1", state=state),
        progress=pb.Progress(tasks_done=done, tasks_total=total),
    )


def test_a_reopened_stream_does_not_repeat_the_last_update():
    watching = Watching("j1", None)
    request, deadline = watching.next_call()
    assert request.job_id == "j1" and deadline > 0
    first = watching.seen(message())
    assert first.job.state is JobState.RUNNING and first.progress.fraction == 0.25
    watching.failed(DeadlineExceeded(StatusCode.DEADLINE_EXCEEDED, "one stream's deadline"))
    assert watching.next_call() is not None, "the watch goes on"
    assert watching.seen(message()) is None, "the new stream's first message repeats the state"
    assert watching.seen(message(done=2)).progress.tasks_done == 2
    watching.seen(message(pb.JOB_STATE_SUCCEEDED, 4, 4))
    assert watching.next_call() is None, "a finished job ends the watch"


def test_the_watch_s_own_timeout_raises_job_timeout():
    watching = Watching("j1", 0.05)
    watching.next_call()
    watching.seen(message())
    time.sleep(0.06)
    with pytest.raises(JobTimeout, match=r"job j1 did not finish within 0.05s \(running\)"):
        watching.failed(DeadlineExceeded(StatusCode.DEADLINE_EXCEEDED, "deadline"))
    with pytest.raises(JobTimeout):
        watching.next_call()


def test_an_unavailable_server_is_retried_a_few_times_then_reported():
    watching = Watching("j1", None)
    unavailable = ServiceUnavailable(StatusCode.UNAVAILABLE, "down")
    for _ in range(RESULT_STREAM_ATTEMPTS - 1):
        watching.next_call()
        watching.failed(unavailable)
    watching.next_call()
    with pytest.raises(ServiceUnavailable):
        watching.failed(unavailable)


def test_streams_that_end_with_nothing_are_an_error_and_others_pass_through():
    watching = Watching("j1", None)
    for _ in range(RESULT_STREAM_ATTEMPTS - 1):
        watching.next_call()
        watching.ended()
    watching.next_call()
    with pytest.raises(ServiceUnavailable, match="without a word"):
        watching.ended()
    missing = JobNotFound(StatusCode.NOT_FOUND, "no such job")
    with pytest.raises(JobNotFound):
        Watching("j1", None).failed(missing)


class _Settled:
    """A stand-in job that records how it was settled."""

    def __init__(self):
        self.outcome = None

    def _settle(self, info, value, error):
        self.outcome = (info.state, value, error)


def test_a_group_watch_settles_each_job_as_its_answer_comes():
    from client_sdk._ops import ClientBase
    from client_sdk.errors import NotFound

    client = ClientBase.__new__(ClientBase)
    client.timeout = 30.0
    jobs = {name: _Settled() for name in ("a", "b", "c")}
    pending = dict(jobs)
    op = client._watch_group(pending)
    call = next(op)
    assert call.method == "WaitJobs" and list(call.request.job_ids) == ["a", "b", "c"]
    first = pb.WaitJobsResponse()
    done = first.jobs.add(job=pb.Job(job_id="a", state=pb.JOB_STATE_SUCCEEDED))
    done.result.CopyFrom(pb.Result(pickle=__import__("pickle").dumps(7)))
    gone = first.jobs.add(job=pb.Job(job_id="b", state=pb.JOB_STATE_SUCCEEDED))
    assert not gone.HasField("result")
    call = op.send(first)
    assert list(call.request.job_ids) == ["c"], "the next call asks only for the rest"
    assert jobs["a"].outcome == (JobState.SUCCEEDED, 7, None)
    _state, _value, error = jobs["b"].outcome
    assert isinstance(error, NotFound) and "result of job b is gone" in str(error)
    last = pb.WaitJobsResponse()
    last.jobs.add(job=pb.Job(job_id="c", state=pb.JOB_STATE_CANCELLED, cancel_reason="stop"))
    with pytest.raises(StopIteration):
        op.send(last)
    assert jobs["c"].outcome[0] is JobState.CANCELLED and not pending
