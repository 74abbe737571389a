"""Starting and stopping the processes the benchmark measures against."""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence

logger = logging.getLogger(__name__)

ROOT = pathlib.Path(__file__).resolve().parent.parent
_SERVING = re.compile(r"serving compute\.v1\.ComputeService on (\S+):(\d+)")
_ECHO = re.compile(r"echo serving on (\d+)")


def _dask_compute() -> str:
    here = pathlib.Path(sys.executable).with_name("dask-compute")
    return str(here) if here.exists() else "dask-compute"


@contextlib.contextmanager
def _process(
    command: Sequence[str], pattern: re.Pattern[str], timeout: float
) -> Iterator[re.Match[str]]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # The server and its workers import bench.tasks, as any installed module.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    with tempfile.TemporaryFile("w+b") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        try:
            deadline = time.monotonic() + timeout
            while True:
                log.seek(0)
                text = log.read().decode(errors="replace")
                match = pattern.search(text)
                if match:
                    break
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{command[0]} did not start:\n{text[-3000:]}")
                time.sleep(0.05)
            yield match
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


@contextlib.contextmanager
def service(workers: int, threads: int) -> Iterator[str]:
    """A ``dask-compute serve`` of ``workers`` worker processes; yields its target."""
    command = [
        _dask_compute(),
        "serve",
        "--port",
        "0",
        "--n-workers",
        str(workers),
        "--threads-per-worker",
        str(threads),
        "--processes",
        "--dashboard-address",
        "",
        # Its own job records, whatever other servers run on this machine.
        "--job-store",
        "memory",
    ]
    with _process(command, _SERVING, timeout=180) as match:
        yield f"{match.group(1)}:{match.group(2)}"


@contextlib.contextmanager
def echo_server() -> Iterator[int]:
    """The bare gRPC echo server; yields its port."""
    with _process([sys.executable, "-m", "bench.echo"], _ECHO, timeout=60) as match:
        yield int(match.group(1))
