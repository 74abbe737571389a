"""Starting and stopping the processes the benchmark measures against."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import pathlib
import re
import signal
import socket
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


@dataclasses.dataclass(frozen=True)
class Started:
    """A process started by :func:`process`, and the log line that said it was ready."""

    process: subprocess.Popen
    match: re.Match[str]

    @property
    def pid(self) -> int:
        """The process id (to watch its memory, or signal it)."""
        return self.process.pid


@contextlib.contextmanager
def process(command: Sequence[str], pattern: re.Pattern[str], timeout: float) -> Iterator[Started]:
    """Run ``command`` until the block ends; ready once its output matches ``pattern``.

    It runs from the project's root with the project on ``PYTHONPATH`` (so
    servers and workers import :mod:`bench.tasks`), its output in a temporary
    file; SIGTERM ends it, then SIGKILL after 60 s.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # The server and its workers import bench.tasks, as any installed module.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    # The child appends to the log through a file of its own, and this side reads
    # it through another: sharing one file (and its offset) let a seek here
    # move where the child wrote, and a line could be lost under load.
    with tempfile.TemporaryDirectory(prefix="dask-compute-bench-log-") as folder:
        path = pathlib.Path(folder) / "output.log"
        with open(path, "ab") as out:
            child = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT
            )
        try:
            deadline = time.monotonic() + timeout
            while True:
                text = path.read_bytes().decode(errors="replace")
                match = pattern.search(text)
                if match:
                    break
                if child.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{command[0]} did not start:\n{text[-3000:]}")
                time.sleep(0.05)
            yield Started(child, match)
        finally:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
            try:
                child.wait(60)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(10)


@dataclasses.dataclass(frozen=True)
class Service:
    """A running ``dask-compute serve``."""

    target: str
    pid: int


@contextlib.contextmanager
def server(args: Sequence[str], timeout: float = 180) -> Iterator[Service]:
    """``dask-compute serve --port 0 ARGS``; yields its target and pid once it listens."""
    command = [_dask_compute(), "serve", "--port", "0", *args]
    with process(command, _SERVING, timeout=timeout) as started:
        match = started.match
        yield Service(f"{match.group(1)}:{match.group(2)}", started.pid)


def free_port() -> int:
    """A TCP port that is free right now on 127.0.0.1 (for a server's metrics, say)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cluster_args(workers: int, threads: int) -> list[str]:
    """``dask-compute serve`` flags for the benchmark's cluster shape, as direct Dask's."""
    return [
        "--n-workers",
        str(workers),
        "--threads-per-worker",
        str(threads),
        "--processes",
        "--dashboard-address",
        "",
    ]


@contextlib.contextmanager
def service(workers: int, threads: int, extra: Sequence[str] = ()) -> Iterator[str]:
    """A ``dask-compute serve`` of ``workers`` worker processes; yields its target.

    Its job records go where a server's go by default, a SQLite file, but
    one of its own in a temporary folder, whatever else runs on the machine.
    """
    with tempfile.TemporaryDirectory(prefix="dask-compute-bench-") as folder:
        args = [
            *cluster_args(workers, threads),
            "--job-store",
            f"sqlite:///{folder}/jobs.db",
            *extra,
        ]
        with server(args) as running:
            yield running.target


@contextlib.contextmanager
def echo_server() -> Iterator[int]:
    """The bare gRPC echo server; yields its port."""
    with process([sys.executable, "-m", "bench.echo"], _ECHO, timeout=60) as started:
        yield int(started.match.group(1))
