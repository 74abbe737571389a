"""``dask-compute`` as a user runs it: a subprocess against the session server."""

from __future__ import annotations

import json
import re

import pytest

from tests.helpers import BIN, cli, ok, run_on_terminal

pytestmark = pytest.mark.integration


def test_info(server) -> None:
    text = ok("info", target=server.target)
    assert re.search(
        r"^workers:\s+2 \(processes\), threads: 4, memory: \d+\.\d\d GiB$", text, re.MULTILINE
    )
    assert "schedulers: distributed, threads, processes, synchronous (default distributed)" in text
    data = json.loads(ok("info", "--json", target=server.target))
    assert data["n_workers"] == 2 and data["versions"]["python"]
    assert len(data["workers"]) == 2


def test_functions(server) -> None:
    assert "add(a: number, b: number) -> number" in ok("functions", target=server.target)
    data = json.loads(ok("functions", "--json", target=server.target))
    greet = next(f for f in data if f["name"] == "greet")
    assert [p["name"] for p in greet["parameters"]] == ["name", "punctuation"]


def test_run_with_json_typed_values(server) -> None:
    assert ok("run", "add", "2", "3", target=server.target).strip() == "5"
    assert (
        ok("run", "greet", "dask", "-k", 'punctuation="?"', target=server.target).strip()
        == "hello dask?"
    )
    assert json.loads(
        ok("run", "scale", "[1, 2]", "--kwarg", "factor=3", "--json", target=server.target)
    ) == [3, 6]
    out = ok("run", "add", "1", "2", "--scheduler", "threads", "--json", target=server.target)
    assert json.loads(out) == 3


def test_the_target_comes_from_the_environment(server) -> None:
    assert ok("run", "ping", env={"DASK_COMPUTE_TARGET": server.target}).strip() == "pong"


def test_submit_status_wait(server) -> None:
    job_id = ok("submit", "sleep", "0.5", target=server.target).strip()
    assert re.fullmatch(r"\w{16,}", job_id)
    status = json.loads(ok("status", job_id, "--json", target=server.target))
    assert status["job_id"] == job_id and status["state"] in ("queued", "running", "succeeded")
    done = cli("wait", job_id, target=server.target)
    assert done.returncode == 0 and done.stdout.strip() == "0.5"
    text = ok("status", job_id, target=server.target)
    assert re.search(rf"^job:\s+{job_id}$", text, re.MULTILINE) and re.search(
        r"^state:\s+succeeded$", text, re.MULTILINE
    )
    record = json.loads(ok("submit", "add", "1", "2", "--json", target=server.target))
    assert record["target"] == "add" and record["state"] in ("queued", "running", "succeeded")
    assert json.loads(ok("wait", record["job_id"], "--json", target=server.target)) == 3


def test_a_long_wait_prints_plain_progress_lines_off_a_terminal(server) -> None:
    job_id = ok("submit", "sleep", "4", "--scheduler", "synchronous", target=server.target).strip()
    done = cli("wait", job_id, target=server.target)
    assert done.returncode == 0
    lines = done.stderr.splitlines()
    assert lines and all(
        re.fullmatch(rf"waiting for job {job_id} \(\d+\.\ds elapsed\)", line) for line in lines
    )
    assert "\r" not in done.stderr


def test_a_long_wait_shows_a_spinner_on_a_terminal(server) -> None:
    job_id = ok("submit", "sleep", "4", "--scheduler", "synchronous", target=server.target).strip()
    returncode, stdout, terminal = run_on_terminal(
        [str(BIN / "dask-compute"), "wait", job_id, "--target", server.target]
    )
    assert returncode == 0 and stdout.strip() == "4"
    frames = re.findall(rf"\r([|/\\-]) waiting for job {job_id} \(\d+\.\ds\)", terminal)
    assert len(frames) >= 5 and set(frames) == {"|", "/", "-", "\\"}
    assert terminal.endswith("\r\x1b[K") and "elapsed" not in terminal


def test_wait_timeout_exits_3_and_the_job_goes_on(server) -> None:
    job_id = ok("submit", "sleep", "3", "--scheduler", "synchronous", target=server.target).strip()
    done = cli("wait", job_id, "--timeout", "0.3", target=server.target)
    assert done.returncode == 3 and "did not finish within 0.3s" in done.stderr
    assert json.loads(ok("status", job_id, "--json", target=server.target))["state"] == "running"
    ok("cancel", job_id, target=server.target)


def test_run_timeout_cancels_the_job(server) -> None:
    done = cli(
        "run", "sleep", "5", "--scheduler", "synchronous", "--timeout", "0.3", target=server.target
    )
    assert done.returncode == 3 and "the job was cancelled" in done.stderr
    newest = json.loads(ok("jobs", "--limit", "1", "--json", target=server.target))[0]
    assert newest["target"] == "sleep" and newest["state"] == "cancelled"


def test_a_named_job_with_a_time_limit(server) -> None:
    options = ["--scheduler", "synchronous", "--name", "nightly report", "--job-timeout", "0.5"]
    job_id = ok("submit", "sleep", "5", *options, target=server.target).strip()
    done = cli("wait", job_id, target=server.target)
    assert done.returncode == 1 and "time limit of 0.5s" in done.stderr
    record = json.loads(ok("status", job_id, "--json", target=server.target))
    assert record["name"] == "nightly report" and record["state"] == "failed"
    table = ok("jobs", "--limit", "1", target=server.target).splitlines()
    assert table[1].startswith(job_id) and table[1].endswith("nightly report")
    bad = cli("submit", "ping", "--job-timeout", "0", target=server.target)
    assert bad.returncode == 2 and "--job-timeout" in bad.stderr


def test_cancel(server) -> None:
    job_id = ok("submit", "sleep", "5", "--scheduler", "synchronous", target=server.target).strip()
    assert ok("cancel", job_id, target=server.target).strip() == f"job {job_id} cancelled"
    again = json.loads(ok("cancel", job_id, "--json", target=server.target))
    assert again == {"job_id": job_id, "cancelled": True, "state": "cancelled"}
    finished = ok("submit", "add", "1", "1", target=server.target).strip()
    ok("wait", finished, target=server.target)
    text = ok("cancel", finished, target=server.target)
    assert text.strip() == f"job {finished} not cancelled: it already succeeded"


def test_jobs_table_and_state_filter(server) -> None:
    failed = cli("run", "fail", "listed", target=server.target)
    assert failed.returncode == 1
    table = ok("jobs", "--limit", "3", target=server.target).splitlines()
    assert table[0].startswith("JOB ID") and table[0].endswith("DURATION  NAME")
    assert len(table) == 4 and table[1].split()[1:5] == [
        "failed",
        "distributed",
        "function",
        "fail",
    ]
    rows = json.loads(
        ok("jobs", "--state", "failed", "--limit", "5", "--json", target=server.target)
    )
    assert rows and all(r["state"] == "failed" for r in rows)
    assert rows[0]["error"]["message"] == "listed"


def test_errors_are_messages_with_exit_codes(server) -> None:
    cases = [
        (("run", "nope"), 1, "no function named 'nope'"),
        (("run", "fail", "boom"), 1, "job failed: ValueError: boom"),
        (("run", "add", "1"), 1, "missing required argument 'b'"),
        (("status", "nojob"), 1, "no job with id 'nojob'"),
        (("run", "add", "1", "--kwarg", "novalue"), 2, "expected NAME=VALUE"),
        (("jobs", "--state", "sleeping"), 2, "Invalid value for '--state'"),
    ]
    for args, code, message in cases:
        done = cli(*args, target=server.target)
        assert done.returncode == code, (args, done.stderr)
        assert message in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr


def test_an_unreachable_server(unused_tcp_port: int) -> None:
    done = cli("info", "--timeout", "1", target=f"127.0.0.1:{unused_tcp_port}")
    assert done.returncode == 1 and "could not reach the server" in done.stderr


def test_health_still_works(server) -> None:
    done = cli("health", "--timeout", "3", target=server.target)
    assert (done.returncode, done.stdout.strip()) == (0, "SERVING")
