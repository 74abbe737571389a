"""WaitJobs applies its response budget before it fetches or encodes a result: for
many finished jobs of large results, one call fetches only what fits, and answers
with those; the rest come with the next calls."""

from __future__ import annotations

import pickle
import threading

import cloudpickle
import grpc
import pytest

from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk._proto.compute.v1 import compute_pb2_grpc as pb_grpc
from server.servicer import WAIT_JOBS_RESULT_BYTES
from tests.helpers import local_settings, serving_in_process, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SIZE = 900_000
JOBS = 40
#: How many 900 kB results fit in one answer.
FIT = WAIT_JOBS_RESULT_BYTES // SIZE


class Counted:
    """A 900 kB result that counts how often it is pickled (encoded for an answer)."""

    lock = threading.Lock()
    pickled = 0

    def __init__(self, n: int) -> None:
        self.n = n

    def __sizeof__(self) -> int:
        return self.n

    def __reduce__(self):
        with Counted.lock:
            Counted.pickled += 1
        return (bytes, (b"x" * self.n,))


def make(n):
    return Counted(n)


def big(n):
    return b"y" * n


def spec(func, scheduler) -> pb.JobSpec:
    payload = cloudpickle.dumps((func, (SIZE,), {}))
    return pb.JobSpec(pickled_call=pb.PickledCall(payload=payload), scheduler=scheduler)


@pytest.fixture(scope="module")
def stub(tmp_path_factory):
    # No result kept with its record: only an answer pickles a result.
    settings = local_settings(
        tmp_path_factory.mktemp("wait-jobs-budget"),
        n_workers=1,
        local_processes=1,
        stored_result_bytes=0,
        processes=False,
    )
    with (
        serving_in_process(settings) as srv,
        grpc.insecure_channel(
            srv.target, options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)]
        ) as channel,
    ):
        yield pb_grpc.ComputeServiceStub(channel)


def finished(stub, func, scheduler) -> list[str]:
    """The ids of JOBS jobs of ``func``, once all have succeeded (no result read yet)."""
    jobs = stub.SubmitJobs(
        pb.SubmitJobsRequest(jobs=[spec(func, scheduler) for _ in range(JOBS)]), timeout=60
    ).jobs
    ids = [j.job_id for j in jobs]

    def states():
        listed = stub.ListJobs(pb.ListJobsRequest(page_size=1000), timeout=10).jobs
        return [j.state for j in listed if j.job_id in set(ids)]

    wait_until(
        lambda: states() == [pb.JOB_STATE_SUCCEEDED] * JOBS, 120, message="the jobs to succeed"
    )
    return ids


def wait_all(stub, ids: list[str]) -> dict[str, bytes]:
    """WaitJobs until every job is answered; each answer within the budget."""
    got: dict[str, bytes] = {}
    calls = 0
    while len(got) < len(ids):
        left = [i for i in ids if i not in got]
        answer = stub.WaitJobs(pb.WaitJobsRequest(job_ids=left), timeout=60)
        calls += 1
        assert answer.jobs, "every call answers at least one job"
        assert len(answer.jobs) <= FIT, "no more results than fit in the budget"
        assert sum(len(e.result.pickle) for e in answer.jobs) <= WAIT_JOBS_RESULT_BYTES
        for entry in answer.jobs:
            assert entry.job.state == pb.JOB_STATE_SUCCEEDED
            got[entry.job.job_id] = pickle.loads(entry.result.pickle)
    assert calls == -(-len(ids) // FIT)
    return got


def test_only_the_results_that_fit_are_encoded(stub):
    ids = finished(stub, make, pb.SCHEDULER_THREADS)
    before = Counted.pickled
    answer = stub.WaitJobs(pb.WaitJobsRequest(job_ids=ids), timeout=60)
    assert [e.job.job_id for e in answer.jobs] == ids[:FIT], "the first that fit, in order"
    assert Counted.pickled - before == FIT, "only the results answered were encoded"
    assert all(pickle.loads(e.result.pickle) == b"x" * SIZE for e in answer.jobs)
    got = wait_all(stub, ids)
    assert all(value == b"x" * SIZE for value in got.values())


def test_results_on_the_cluster_come_a_budget_at_a_time(stub):
    ids = finished(stub, big, pb.SCHEDULER_DISTRIBUTED)
    got = wait_all(stub, ids)
    assert sorted(got) == sorted(ids)
    assert all(value == b"y" * SIZE for value in got.values())
