"""A job run again after a restart passes the same gate as a new one, with its owner's
current permissions and the server's current policy."""

from __future__ import annotations

import pathlib
import signal
import time

import pytest

from client_sdk import ComputeClient
from tests.helpers import start_server, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ARGS = [
    "--n-workers", "1", "--threads-per-worker", "1", "--dashboard-address", "",
    "--local-processes", "1",
]  # fmt: skip
TOKEN = "alice-token-0123456789abcdef"


def mark_then_sleep(marker: str, seconds: float) -> str:
    """Leave a marker file (proof that the job's code ran), then sleep."""
    pathlib.Path(marker).write_text("ran")
    time.sleep(seconds)
    return "done"


@pytest.mark.parametrize("revoked", ["no-pickled-work", "token-lost-code"])
def test_a_retryable_pickled_job_does_not_run_again_without_code(tmp_path, revoked):
    tokens = tmp_path / "tokens"
    tokens.write_text(f"alice run,code {TOKEN}\n")
    marker = tmp_path / "ran"
    env = {"DASK_COMPUTE_JOB_STORE": f"sqlite:///{tmp_path / 'jobs.db'}"}  # one store for both
    first = start_server([*ARGS, "--tokens-file", str(tokens)], tmp_path / "first.log", env=env)
    try:
        with ComputeClient(first.target, token=TOKEN) as client:
            job = client.submit(
                mark_then_sleep, str(marker), 600, scheduler="threads", retryable=True
            )
            wait_until(marker.exists, 60, message="the job to start")
    finally:
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(30)
    marker.unlink()

    extra = []
    if revoked == "no-pickled-work":
        extra = ["--no-pickled-work"]
    else:
        tokens.write_text(f"alice run {TOKEN}\n")
    second = start_server(
        [*ARGS, "--tokens-file", str(tokens), *extra], tmp_path / "second.log", env=env
    )
    try:
        with ComputeClient(second.target, token=TOKEN) as client:
            info = client.get_job(job.job_id)
    finally:
        second.stop()
    # Settled before the server listens: re-run, it would be queued or running now.
    assert info.state.value == "failed", info
    assert info.error is not None and info.error.type == "ServiceRestarted"
    message = info.error.message
    assert "could not be re-run" in message and "'code' permission" in message, message
    assert not marker.exists(), "the stored pickle was loaded and run"
    assert f"job={job.job_id} not re-run" in second.log()


def test_a_retryable_named_job_runs_again_for_an_owner_still_known(tmp_path):
    """The gate lets through what its owner may still do: a retryable named call re-runs."""
    tokens = tmp_path / "tokens"
    tokens.write_text(f"alice run {TOKEN}\n")
    env = {"DASK_COMPUTE_JOB_STORE": f"sqlite:///{tmp_path / 'jobs.db'}"}
    first = start_server([*ARGS, "--tokens-file", str(tokens)], tmp_path / "first.log", env=env)
    try:
        with ComputeClient(first.target, token=TOKEN) as client:
            job = client.submit_function("sleep", 600, scheduler="distributed", retryable=True)
            wait_until(
                lambda: client.get_job(job.job_id).state.value == "running",
                60,
                message="the job to run",
            )
    finally:
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(30)
    second = start_server([*ARGS, "--tokens-file", str(tokens)], tmp_path / "second.log", env=env)
    try:
        with ComputeClient(second.target, token=TOKEN) as client:
            info = client.get_job(job.job_id)
            assert info.state.value in ("queued", "running"), info
            assert client.cancel(job.job_id)
    finally:
        second.stop()
