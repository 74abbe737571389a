"""WaitJobs: many jobs followed in one call, and map/gather, against the session's
in-process server."""

from __future__ import annotations

import asyncio
import pickle
import time

import cloudpickle
import grpc
import numpy as np
import pytest

from client_sdk import AsyncComputeClient
from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk._proto.compute.v1 import compute_pb2_grpc as pb_grpc
from tests.helpers import inc, slowinc

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stub(local_server):
    channel = grpc.insecure_channel(local_server.target)
    yield pb_grpc.ComputeServiceStub(channel)
    channel.close()


def pickled(func, *args, scheduler=pb.SCHEDULER_DISTRIBUTED, **kwargs):
    payload = cloudpickle.dumps((func, args, kwargs))
    return pb.JobSpec(pickled_call=pb.PickledCall(payload=payload), scheduler=scheduler)


def submit(stub, *specs):
    return [
        j.job_id for j in stub.SubmitJobs(pb.SubmitJobsRequest(jobs=list(specs)), timeout=30).jobs
    ]


def wait_jobs(stub, ids, timeout=None, **fields):
    request = pb.WaitJobsRequest(job_ids=ids, **fields)
    if timeout is not None:
        request.timeout.FromMilliseconds(int(timeout * 1000))
    return stub.WaitJobs(request, timeout=60)


def test_it_answers_with_the_first_finished_and_later_with_the_rest(stub):
    fast, slow = submit(stub, pickled(inc, 1), pickled(slowinc, 2, delay=1.5))
    start = time.monotonic()
    first = wait_jobs(stub, [slow, fast])
    assert time.monotonic() - start < 1.4, "it answered when the first job finished"
    assert not first.timed_out
    assert [e.job.job_id for e in first.jobs] == [fast]
    assert pickle.loads(first.jobs[0].result.pickle) == 2
    rest = wait_jobs(stub, [slow])
    assert [e.job.job_id for e in rest.jobs] == [slow] and pickle.loads(
        rest.jobs[0].result.pickle
    ) == 3
    assert rest.jobs[0].job.state == pb.JOB_STATE_SUCCEEDED


def test_every_finished_job_comes_in_one_answer_in_the_order_asked(stub):
    ids = submit(stub, *[pickled(inc, i) for i in range(200)])
    for job_id in ids:  # all finished before asking
        stub.WaitJob(pb.WaitJobRequest(job_id=job_id), timeout=60)
    answer = wait_jobs(stub, ids)
    assert [e.job.job_id for e in answer.jobs] == ids
    assert [pickle.loads(e.result.pickle) for e in answer.jobs] == list(range(1, 201))


def test_failures_cancellations_and_a_timeout(stub):
    failing, sleeping = submit(stub, pickled(int, "not a number"), pickled(slowinc, 0, delay=30))
    answer = wait_jobs(stub, [failing])
    assert answer.jobs[0].job.state == pb.JOB_STATE_FAILED
    assert "invalid literal" in answer.jobs[0].job.error.message
    assert not answer.jobs[0].HasField("result")
    timed = wait_jobs(stub, [sleeping], timeout=0.3)
    assert timed.timed_out and not timed.jobs
    stub.CancelJob(pb.CancelJobRequest(job_id=sleeping, reason="enough"), timeout=30)
    cancelled = wait_jobs(stub, [sleeping]).jobs[0].job
    assert cancelled.state == pb.JOB_STATE_CANCELLED and cancelled.cancel_reason == "enough"


def test_release_frees_the_results_sent(stub):
    (job_id,) = submit(stub, pickled(inc, 41))
    answer = wait_jobs(stub, [job_id], release=True)
    assert pickle.loads(answer.jobs[0].result.pickle) == 42
    assert not answer.jobs[0].job.result_available
    again = wait_jobs(stub, [job_id])
    assert not again.jobs[0].HasField("result"), "a released result is not sent again"
    assert not again.jobs[0].job.result_available


@pytest.mark.parametrize(
    ("ids", "code", "words"),
    [
        ([], grpc.StatusCode.INVALID_ARGUMENT, "1 to 10000 job ids"),
        (["a" * 32, "a" * 32], grpc.StatusCode.INVALID_ARGUMENT, "more than once"),
        (["f" * 32], grpc.StatusCode.NOT_FOUND, "f" * 32),
        (["not an id"], grpc.StatusCode.NOT_FOUND, "'not an id'"),
    ],
)
def test_bad_requests_get_clear_statuses(stub, ids, code, words):
    with pytest.raises(grpc.RpcError) as info:
        wait_jobs(stub, ids)
    assert info.value.code() == code
    assert words in info.value.details()


def test_map_and_gather_follow_a_batch_with_few_calls(local_client):
    client = local_client
    jobs = client.map(inc, range(3000))
    assert client.gather(jobs) == list(range(1, 3001))
    assert all(job.done() for job in jobs)
    # Large results in a batch stay on the server until asked for.
    arrays = client.map(np.ones, [10, 2_000_000])
    values = client.gather(arrays)
    assert values[0].sum() == 10 and values[1].nbytes == 16_000_000
    # A failure settles its own job only.
    mixed = client.map(int, ["1", "x", "3"])
    assert mixed[0].result(30) == 1 and mixed[2].result(30) == 3
    assert isinstance(mixed[1].exception(30), ValueError)


def test_the_async_client_maps_and_gathers(local_server):
    async def main():
        async with AsyncComputeClient(local_server.target) as client:
            jobs = await client.map(inc, range(500))
            assert await client.gather(jobs) == list(range(1, 501))
            mixed = await client.map(int, ["1", "x"])
            assert await mixed[0] == 1
            assert isinstance(await mixed[1].exception(30), ValueError)

    asyncio.run(main())
