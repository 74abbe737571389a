"""A thousand callers blocked in WaitJob and Run cost coroutines, not threads."""

from __future__ import annotations

import asyncio
import pathlib
import time
import uuid

import grpc
import pytest

from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk._proto.compute.v1 import compute_pb2_grpc as pb_grpc
from tests.helpers import async_wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WAITERS = 1000
#: Of them, callers of Run, each with its own sleep job (the cluster has 4 threads).
RUNS = 100


def _threads(pid: int) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


def test_thousand_blocked_callers_do_not_need_threads(server):
    baseline = _threads(server.process.pid)

    async def scenario():
        async with grpc.aio.insecure_channel(server.target) as channel:
            stub = pb_grpc.ComputeServiceStub(channel)
            spec = pb.JobSpec(
                call=pb.FunctionCall(function="sleep"), scheduler=pb.SCHEDULER_DISTRIBUTED
            )
            spec.call.args.append(3)
            job = (await stub.SubmitJob(pb.SubmitJobRequest(job=spec), timeout=30)).job
            waits = [
                asyncio.ensure_future(
                    stub.WaitJob(pb.WaitJobRequest(job_id=job.job_id), timeout=120)
                )
                for _ in range(WAITERS - RUNS)
            ]
            label = f"blocked-{uuid.uuid4().hex}"
            runs_spec = pb.JobSpec(
                call=pb.FunctionCall(function="sleep"),
                scheduler=pb.SCHEDULER_DISTRIBUTED,
                name=label,
            )
            runs_spec.call.args.append(0.5)
            runs = [
                asyncio.ensure_future(stub.Run(pb.RunRequest(job=runs_spec), timeout=120))
                for _ in range(RUNS)
            ]

            async def every_run_arrived():
                listed = await stub.ListJobs(pb.ListJobsRequest(page_size=1000), timeout=30)
                return sum(j.name == label for j in listed.jobs) == RUNS

            # The Runs went out after the waits, on the same channel: once the
            # server holds every Run's job, every caller is blocked in it.
            await async_wait_until(every_run_arrived, message=f"the server to hold all {RUNS} Runs")
            during = _threads(server.process.pid)
            started = time.monotonic()
            ping = await stub.Run(
                pb.RunRequest(
                    job=pb.JobSpec(
                        call=pb.FunctionCall(function="ping"), scheduler=pb.SCHEDULER_THREADS
                    )
                ),
                timeout=30,
            )
            ping_seconds = time.monotonic() - started
            answers = await asyncio.gather(*waits, *runs)
            return during, ping, ping_seconds, answers

    during, ping, ping_seconds, answers = asyncio.run(scenario())
    assert during - baseline < 50, (
        f"threads went from {baseline} to {during} with {WAITERS} callers blocked"
    )
    assert ping.job.state == pb.JOB_STATE_SUCCEEDED
    assert ping_seconds < 5, f"a ping took {ping_seconds:.2f}s while {WAITERS} callers waited"
    assert len(answers) == WAITERS
    assert all(a.job.state == pb.JOB_STATE_SUCCEEDED for a in answers)
