"""``Job`` is a real ``concurrent.futures.Future``, watched by a WaitJob long poll."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import uuid

import dask
import pytest

from client_sdk import ComputeClient, JobCancelled, JobFailed, JobState, JobTimeout
from tests.helpers import inc, slowinc, throws

pytestmark = pytest.mark.integration


def test_a_job_is_a_future(client: ComputeClient) -> None:
    job = client.submit(slowinc, 1, delay=0.5)
    assert isinstance(job, concurrent.futures.Future)
    assert not job.done() and not job.cancelled()
    assert job.result(timeout=30) == 2
    assert job.done() and not job.cancelled() and job.exception() is None
    assert repr(job) == f"<Job {job.job_id}: succeeded>"


def test_result_with_a_timeout_leaves_the_job_running(client: ComputeClient) -> None:
    job = client.submit(slowinc, 1, delay=1.0)
    with pytest.raises(JobTimeout, match="did not finish within 0.1s"):
        job.result(timeout=0.1)
    with pytest.raises(TimeoutError):
        job.exception(timeout=0)
    assert job.result(timeout=30) == 2


def test_status_and_running_ask_the_server(client: ComputeClient) -> None:
    job = client.submit(slowinc, 1, delay=1.0)
    seen = set()
    while not job.done():
        seen.add(job.state())
        if job.running():
            seen.add("running() was true")
    assert JobState.RUNNING in seen and "running() was true" in seen
    job.result(timeout=30)
    assert job.state() is JobState.SUCCEEDED and not job.running()


def test_exception_returns_what_the_job_raised(client: ComputeClient) -> None:
    job = client.submit(throws, "kaput")
    error = job.exception(timeout=30)
    assert type(error) is ValueError and str(error) == "kaput"
    assert job.done() and job.info().state is JobState.FAILED
    with pytest.raises(ValueError, match="kaput"):
        job.result()


def test_cancel_a_running_job(client: ComputeClient) -> None:
    job = client.submit(slowinc, 1, delay=10, scheduler="synchronous")
    assert job.cancel() is True
    assert job.cancelled() and job.done()
    with pytest.raises(JobCancelled, match="cancelled by the caller"):
        job.result()
    with pytest.raises(concurrent.futures.CancelledError):
        job.exception()
    assert job.cancel() is True  # already cancelled, as with any future


def test_a_finished_job_cannot_be_cancelled(client: ComputeClient) -> None:
    job = client.submit(inc, 1)
    job.result(timeout=30)
    assert job.cancel() is False
    assert not job.cancelled() and job.state() is JobState.SUCCEEDED


def test_done_callbacks_fire_once_off_grpcs_threads(client: ComputeClient) -> None:
    calls: list[tuple[str, object, str]] = []
    fired = threading.Event()

    def callback(job):
        calls.append((job.job_id, job.result(), threading.current_thread().name))
        fired.set()

    job = client.submit(slowinc, 1, delay=0.5)
    job.add_done_callback(callback)
    assert job.result(timeout=30) == 2
    assert fired.wait(10)
    assert job.state() is JobState.SUCCEEDED  # settle nothing twice
    assert len(calls) == 1
    job_id, value, thread = calls[0]
    assert (job_id, value) == (job.job_id, 2)
    assert thread.startswith("dask-compute-callbacks")


def test_a_callback_added_after_the_end_runs_at_once(client: ComputeClient) -> None:
    job = client.submit(inc, 1)
    job.result(timeout=30)
    calls = []
    job.add_done_callback(lambda j: calls.append(threading.current_thread()))
    assert calls == [threading.current_thread()]


def test_callbacks_fire_for_cancelled_and_failed_jobs(client: ComputeClient) -> None:
    outcomes = []
    both = threading.Semaphore(0)

    def record(job):
        outcomes.append("cancelled" if job.cancelled() else type(job.exception()).__name__)
        both.release()

    cancelled = client.submit(slowinc, 1, delay=10, scheduler="synchronous")
    cancelled.add_done_callback(record)
    failed = client.submit(throws, "x")
    failed.add_done_callback(record)
    cancelled.cancel()
    assert both.acquire(timeout=30) and both.acquire(timeout=30)
    assert sorted(outcomes) == ["ValueError", "cancelled"]


def test_a_callback_may_wait_for_another_job(client: ComputeClient) -> None:
    # Callbacks run off gRPC's thread, so one may block on another job.
    second = client.submit(slowinc, 10, delay=0.5)
    results = []
    done = threading.Event()

    def chained(job):
        results.append(job.result() + second.result(timeout=30))
        done.set()

    client.submit(inc, 1).add_done_callback(chained)
    assert done.wait(30) and results == [2 + 11]


def test_concurrent_futures_helpers_work_with_jobs(client: ComputeClient) -> None:
    jobs = client.map(slowinc, [3, 2, 1], delay=0.1, scheduler="threads")
    done, pending = concurrent.futures.wait(jobs, timeout=30)
    assert done == set(jobs) and not pending
    assert sorted(j.result() for j in concurrent.futures.as_completed(jobs, timeout=30)) == [
        2,
        3,
        4,
    ]
    cancelled = client.submit(slowinc, 1, delay=10, scheduler="synchronous")
    cancelled.cancel()
    done, _ = concurrent.futures.wait([cancelled], timeout=10)
    assert done == {cancelled}


def test_a_job_can_be_awaited_through_asyncio(client: ComputeClient) -> None:
    async def main():
        return await asyncio.wrap_future(client.submit(inc, 5))

    assert asyncio.run(main()) == 6


def test_many_jobs_beyond_the_watch_window(client: ComputeClient, monkeypatch) -> None:
    from client_sdk import client as client_module

    monkeypatch.setattr(client_module, "WATCH_WINDOW", 4)
    with ComputeClient(client.target) as small:
        jobs = small.map(slowinc, range(20), delay=0.05, scheduler="threads")
        assert small._watching <= 4
        assert small.gather(jobs) == list(range(1, 21))
        assert small._watching == 0 and not small._queued


def test_watching_outlasts_a_long_poll(server, monkeypatch) -> None:
    # Waits longer than one WaitJob are made of several, each with a deadline.
    from client_sdk._ops import waiting

    monkeypatch.setattr(waiting, "LONG_POLL", 0.2)
    with ComputeClient(server.target, timeout=5) as short:
        job = short.submit(slowinc, 1, delay=1.0, scheduler="synchronous")
        assert short.wait(job.job_id).state is JobState.SUCCEEDED
        assert job.result(timeout=30) == 2
        with pytest.raises(JobTimeout):
            short.wait(short.submit(slowinc, 1, delay=1.0, scheduler="synchronous").job_id, 0.5)


def takes_a_timeout(name, timeout):
    """A function whose own keyword arguments are called ``name`` and ``timeout``."""
    return f"{name}:{timeout}"


def test_a_job_carries_a_name_and_a_time_limit(client: ComputeClient) -> None:
    job = client.submit(
        slowinc, 1, delay=10, scheduler="synchronous", job_name="warm cache", job_timeout=0.5
    )
    with pytest.raises(JobFailed, match="time limit of 0.5s") as caught:
        job.result(timeout=30)
    assert caught.value.type == "TimeoutError"
    record = job.info()
    assert record.name == "warm cache" and record.state is JobState.FAILED
    # The job's options are its own: the function's `name` and `timeout` stay the function's.
    echoed = client.submit(takes_a_timeout, name="n", timeout=3, job_name="echo")
    assert echoed.result(timeout=30) == "n:3" and echoed.info().name == "echo"


def test_run_map_and_compute_carry_the_name(client: ComputeClient) -> None:
    label = f"batch-{uuid.uuid4().hex[:8]}"
    assert client.run("add", 1, 2, job_name=label) == 3
    jobs = client.map(inc, range(3), job_name=label, job_timeout=60)
    assert client.gather(jobs) == [1, 2, 3]
    assert client.compute(dask.delayed(inc)(41), job_name=label) == (42,)
    named = [j for j in client.list_jobs(limit=20) if j.name == label]
    assert sorted(j.kind for j in named) == ["function", "graph"] + ["pickled_call"] * 3
    with pytest.raises(ValueError, match="at most 256 characters"):
        client.submit(inc, 1, job_name="x" * 257)
    with pytest.raises(ValueError, match="positive seconds"):
        client.map(inc, range(3), job_timeout=0)
