"""Every script in examples/ runs, as a user would run it, against the session server.

The session's server process, not the in-process one: 05_submit_watch_cancel
cancels a job on the synchronous scheduler whose thread runs on for its 10s
(Python cannot stop a thread), and in the test process that thread would hold
up the interpreter's exit.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.integration

EXAMPLES = ROOT / "examples"


def run_example(name: str, *args: str, target: str | None = None, timeout: float = 180) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DASK_COMPUTE_TARGET", None)
    if target is not None:
        env["DASK_COMPUTE_TARGET"] = target
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 0, f"{name} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_every_example_is_tested() -> None:
    tested = {
        "01_start_server.py",
        "02_hello_client.py",
        "03_collections.py",
        "04_gil_fib.py",
        "05_submit_watch_cancel.py",
    }
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


@pytest.mark.slow
def test_start_a_server_with_processes_and_with_threads() -> None:
    out = run_example("01_start_server.py")
    clients = re.findall(
        r"<ComputeClient: 'grpc://127\.0\.0\.1:\d+' workers=2 threads=2, memory=.* GiB>", out
    )
    assert len(clients) == 2, out
    assert "workers are processes" in out and "workers are threads" in out
    assert "a task ran in process" in out and ": its own (server" in out
    assert ": the server's own (server" in out
    assert out.count("server stopped with exit code 0") == 2


def test_hello_client(server) -> None:
    out = run_example("02_hello_client.py", "--target", server.target)
    assert f"<ComputeClient: 'grpc://{server.target}' workers=2 threads=4" in out
    assert "run('add', 2, 3) = 5" in out
    assert re.search(r"submit\(square, 7\) -> <Job \w+: \w+> -> 49", out)
    assert "map(square, range(10)) -> [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]" in out


def test_collections_on_each_scheduler(server) -> None:
    out = run_example("03_collections.py", target=server.target)
    rows = re.findall(r"^(dask\.\w+)\s+(\w+)\s+(\d+\.\d+)\s+(.+)$", out, re.MULTILINE)
    assert [(p, s) for p, s, _, _ in rows] == [
        (p, s)
        for p in ("dask.array", "dask.bag", "dask.delayed")
        for s in ("distributed", "threads", "processes", "synchronous")
    ]
    by_pipeline: dict[str, set[str]] = {}
    for pipeline, _, _, value in rows:
        by_pipeline.setdefault(pipeline, set()).add(value)
    assert all(len(values) == 1 for values in by_pipeline.values()), by_pipeline  # same everywhere
    assert by_pipeline["dask.delayed"] == {"1333"}
    assert "[('the', 600), ('quick', 200), ('brown', 200)]" in by_pipeline["dask.bag"]
    assert "with client.as_default(): x.compute() = 1333" in out
    assert "and dask.compute(x) = (1333,)" in out


def test_fib_on_threads_and_processes(server) -> None:
    out = run_example("04_gil_fib.py", "--target", server.target, "--n", "24", "--calls", "4")
    assert re.search(r"4 x fib\(24\) = 46368 on threads\s*: \d+\.\d\ds", out)
    assert re.search(r"4 x fib\(24\) = 46368 on processes: \d+\.\d\ds", out)
    assert re.search(r"processes were \d+\.\dx as fast as threads", out)
    assert "run('fib', 20) = 6765" in out


def test_submit_watch_and_cancel(server) -> None:
    out = run_example(
        "05_submit_watch_cancel.py",
        "--target",
        server.target,
        "--seconds",
        "10",
        "--scheduler",
        "synchronous",
    )
    assert re.search(r"submitted \w+", out), out
    assert re.search(r"^\s+\d+\.\d\ds\s+running$", out, re.MULTILINE), out
    assert re.search(r"^cancel\(\) -> True$", out, re.MULTILINE), out
    assert "result() raised JobCancelled" in out
    assert "final state: cancelled (reason: cancelled by the caller)" in out
    assert "callback: job is done, cancelled=True" in out
