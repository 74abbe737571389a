"""Helpers shared by the tests: task functions and real server processes."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence

ROOT = pathlib.Path(__file__).resolve().parent.parent
BIN = pathlib.Path(sys.executable).parent
_LISTENING = re.compile(r"serving compute\.v1\.ComputeService on (\S+):(\d+)")


def inc(x):
    """x + 1."""
    return x + 1


def stops():
    """Raises StopIteration, as next() of an empty iterator does."""
    return next(iter(()))


def cancels():
    """Raises asyncio.CancelledError, as code that runs its own event loop may."""
    import asyncio

    raise asyncio.CancelledError("from the job")


class Abort(BaseException):
    """A BaseException of the job's own, not an Exception."""


def aborts(kind="own"):
    """Raises a BaseException that is not an Exception: GeneratorExit, or :class:`Abort`."""
    raise GeneratorExit("from the job") if kind == "generator" else Abort("from the job")


def slowinc(x, delay=0.2):
    """x + 1 after ``delay`` seconds."""
    time.sleep(delay)
    return x + 1


def throws(message="boom"):
    """Raise a ValueError."""
    raise ValueError(message)


class CustomError(Exception):
    """An exception type defined in the tests (importable by client and server)."""


@dataclasses.dataclass
class RunningServer:
    """A ``dask-compute serve`` process started by a test."""

    process: subprocess.Popen
    host: str
    port: int
    log_path: pathlib.Path

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Signal the server and wait for it to exit; returns its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise AssertionError(f"server did not exit within {timeout}s:\n{self.log()[-3000:]}")


def start_server(
    args: Sequence[str],
    log_path: pathlib.Path,
    *,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    cwd: pathlib.Path | None = None,
    port_flag: bool = True,
) -> RunningServer:
    """Start ``dask-compute serve --port 0 ARGS`` and wait until it listens.

    The server picks a free port and logs it; this reads the log for it.
    With ``port_flag=False``, ``--port 0`` is left out (ARGS choose the port).
    """
    full_env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": str(ROOT),
        # Each test server keeps its job records beside its log, never in ~/.local/state.
        "DASK_COMPUTE_JOB_STORE": f"sqlite:///{log_path.parent / (log_path.stem + '-jobs.db')}",
        **(env or {}),
    }
    log = open(log_path, "wb")
    process = subprocess.Popen(
        [str(BIN / "dask-compute"), "serve", *(["--port", "0"] if port_flag else []), *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=full_env,
        cwd=cwd or ROOT,
    )
    log.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        match = _LISTENING.search(text)
        if match:
            return RunningServer(process, match.group(1), int(match.group(2)), log_path)
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}:\n{text[-3000:]}")
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"server did not start within {timeout}s:\n{log_path.read_text()[-3000:]}")


@contextlib.contextmanager
def running_server(
    args: Sequence[str], log_path: pathlib.Path, **kwargs
) -> Iterator[RunningServer]:
    """:func:`start_server` as a context manager that stops the server on exit."""
    server = start_server(args, log_path, **kwargs)
    try:
        yield server
    finally:
        server.stop()


def free_port() -> int:
    """A TCP port that is free right now on 127.0.0.1."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """A private PostgreSQL server on a free loopback port; yields its SQLAlchemy URL.

    The benchmark's own starter (:func:`bench.pg.postgres`): it runs as the
    ``postgres`` user when the tests run as root (initdb refuses root), in a
    fresh folder under the system's temp dir that user can reach.
    """
    from bench import pg

    assert pg.available(), (
        "PostgreSQL's server binaries or psycopg are missing: install Debian's postgresql "
        "(make test does)"
    )
    with pg.postgres() as database:
        yield database.url


def run_bench(section: str, timeout: float = 240) -> tuple[str, float]:
    """``python -m bench --quick --section SECTION`` as a user runs it; its output and seconds.

    Fails the test on a non-zero exit, with what the benchmark printed.
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name in ("DASK_COMPUTE_TARGET", "BENCH_SOAK_STORE"):
        env.pop(name, None)
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--section", section],
        capture_output=True,
        check=False,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )
    took = time.monotonic() - start
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Dask Compute Service benchmark (quick): 2 worker processes x 1 thread" in done.stdout, (
        done.stdout
    )
    return done.stdout, took


def run_on_terminal(command: Sequence[str], timeout: float = 60) -> tuple[int, str, str]:
    """Run ``command`` with its standard error on a pseudo-terminal.

    Returns:
        Its exit code, standard output, and what it drew on the terminal.
    """
    primary, secondary = os.openpty()
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=secondary, text=True)
        os.close(secondary)
        chunks = []
        while True:
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # EIO: the terminal closed
                break
            if not chunk:
                break
            chunks.append(chunk)
        stdout, _ = process.communicate(timeout=timeout)
    finally:
        os.close(primary)
    return process.returncode, stdout, b"".join(chunks).decode()
