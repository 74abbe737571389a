"""Following a job's progress from the SDK and the command line, against the session server."""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from client_sdk import (
    AsyncComputeClient,
    ComputeClient,
    JobNotFound,
    JobState,
    JobTimeout,
    JobUpdate,
    Progress,
)
from tests.helpers import BIN, cli, ok, run_on_terminal

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(server):
    with ComputeClient(server.target) as client:
        yield client


def _submit_graph(client: ComputeClient, scheduler: str, parts: int = 12, delay: float = 0.4):
    """A graph of ``parts`` slow tasks plus their sum, submitted without waiting."""
    return client.submit_function("slow_graph", parts, delay, scheduler=scheduler)


@pytest.mark.parametrize("scheduler", ["distributed", "threads"])
def test_job_watch_reports_increasing_progress_then_the_end(client, scheduler):
    job = _submit_graph(client, scheduler)
    updates = list(job.watch())
    seen = [(u.job.state.value, u.progress.tasks_done, u.progress.tasks_total) for u in updates]
    assert all(isinstance(u, JobUpdate) for u in updates)
    assert updates[-1].job.state is JobState.SUCCEEDED
    assert all(not u.job.state.finished for u in updates[:-1]), f"the watch ends at the end: {seen}"
    done = [u.progress.tasks_done for u in updates]
    assert done == sorted(done), f"progress went back: {seen}"
    final = updates[-1].progress
    assert final.tasks_total >= 13 and final.tasks_done == final.tasks_total, seen
    assert final.fraction == 1.0
    middle = [u.progress for u in updates if 0 < u.progress.tasks_done < u.progress.tasks_total]
    assert middle and all(0 < p.fraction < 1 for p in middle), seen
    assert len(set(updates)) == len(updates), f"an update was reported twice: {seen}"
    assert job.result(30) == sum(range(1, 13))


def test_progress_is_a_snapshot_and_the_watch_can_stop_early(client):
    job = _submit_graph(client, "distributed", parts=8, delay=0.5)
    first = job.progress()
    assert isinstance(first, Progress) and first.tasks_done < 9
    for update in client.watch(job.job_id):
        if update.progress.tasks_done >= 2:
            break  # closes the stream; the job goes on
    later = job.progress()
    assert later.tasks_done >= 2 and later.tasks_total == 9
    assert job.result(60) == sum(range(1, 9))
    assert job.progress() == Progress(9, 9), "a finished job has all its tasks done"


def test_a_watch_that_runs_out_of_time_raises_and_the_job_goes_on(client):
    job = client.submit_function("sleep", 3, scheduler="threads")
    seen = []
    with pytest.raises(JobTimeout, match=rf"job {job.job_id} did not finish within 0.5s"):
        for update in job.watch(timeout=0.5):
            seen.append(update)  # noqa: PERF402  (kept as they come: the watch raises at its end)
    assert seen and seen[0].job.state in (JobState.QUEUED, JobState.RUNNING)
    assert job.result(30) == 3


def test_watching_a_failed_job_ends_with_its_error(client):
    job = client.submit_function("fail", "nope")
    last = list(job.watch())[-1]
    assert last.job.state is JobState.FAILED and last.job.error.message == "nope"


def test_watching_an_unknown_job_is_not_found(client):
    with pytest.raises(JobNotFound):
        list(client.watch("f" * 32))
    with pytest.raises(ValueError, match="timeout"):
        list(client.watch("f" * 32, timeout=0))


def test_the_async_client_watches_with_async_for(server):
    async def main():
        async with AsyncComputeClient(server.target) as aclient:
            job = await aclient.submit_function("slow_graph", 4, 0.3, scheduler="distributed")
            updates = [update async for update in job.watch()]
            assert updates[-1].job.state is JobState.SUCCEEDED
            assert updates[-1].progress == Progress(5, 5)
            assert await job.progress() == Progress(5, 5)
            assert await job == sum(range(1, 5))
            with pytest.raises(JobNotFound):
                async for _ in aclient.watch("0" * 32):
                    pass

    asyncio.run(main())


def test_cli_watch_prints_progress_lines_and_the_end(server):
    job_id = ok("submit", "slow_graph", "6", "0.3", target=server.target).strip()
    done = cli("watch", job_id, target=server.target)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert lines and all(
        re.fullmatch(
            rf"job {job_id} (queued|running|succeeded): "
            r"(\d+/\d+ tasks \(\d+%\)|tasks not known yet), \d+\.\ds",
            line,
        )
        for line in lines
    ), lines
    assert "\r" not in done.stderr
    assert re.fullmatch(rf"job {job_id} succeeded in \d+\.\d{{3}}s \(7/7 tasks\)\n", done.stdout), (
        done.stdout
    )


def test_cli_watch_json_lines_and_exit_codes(server):
    job_id = ok("submit", "slow_graph", "4", "0.2", target=server.target).strip()
    updates = [
        json.loads(line)
        for line in ok("watch", job_id, "--json", target=server.target).splitlines()
    ]
    assert updates[-1]["job"]["state"] == "succeeded"
    assert updates[-1]["progress"] == {"tasks_done": 5, "tasks_total": 5}
    failed = ok("submit", "fail", "nope", target=server.target).strip()
    done = cli("watch", failed, target=server.target)
    assert done.returncode == 1 and "nope" in done.stdout
    slow = ok("submit", "sleep", "3", "--scheduler", "threads", target=server.target).strip()
    done = cli("watch", slow, "--timeout", "0.5", target=server.target)
    assert done.returncode == 3 and "did not finish within 0.5s" in done.stderr


def test_cli_watch_draws_a_bar_on_a_terminal(server, client):
    # Four threads, 24 tasks of half a second: the job outlasts the CLI's start-up.
    job_id = _submit_graph(client, "distributed", parts=24, delay=0.5).job_id
    returncode, stdout, terminal = run_on_terminal(
        [str(BIN / "dask-compute"), "watch", job_id, "--target", server.target]
    )
    assert returncode == 0 and "succeeded" in stdout
    bars = re.findall(r"\r\[([#.]{30})\]  (\d+)/25 tasks  (\w+)  \d+\.\ds\x1b\[K", terminal)
    assert len(bars) >= 3, terminal
    filled = [bar.count("#") for bar, _, _ in bars]
    assert filled == sorted(filled) and filled[-1] == 30 and filled[0] < 30
    assert bars[-1][1:] == ("25", "succeeded")
    assert terminal.endswith("\n")
