"""Helpers shared by the tests: task functions, waiting, and real servers and clusters.

What two test modules need lives here (or in a fixture of tests/conftest.py),
never in a test module that another imports. Dask workers import this module
to unpickle the task functions, so it imports nothing heavy at its top.

- Task functions: :func:`inc`, :func:`slowinc`, :func:`throws`, ...
- Waiting for a condition: :func:`wait_until` and :func:`async_wait_until`.
- Servers: :func:`start_server` / :func:`running_server` (a ``dask-compute serve``
  process) and :class:`LocalServer` / :func:`serving_in_process` (the real core
  and gRPC server in this process, on port 0).
- Clusters and stores of their own: :func:`start_scheduler`, :func:`start_worker`,
  :func:`shared_cluster`, :func:`postgres_server`.
- Commands as a user runs them: :func:`cli`, :func:`ok`, :func:`run_bench`,
  :func:`run_on_terminal`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

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


# -- waiting --------------------------------------------------------------------------


def error_info(err: Any) -> Any:
    """The ``google.rpc.ErrorInfo`` of a failed call (a ``grpc.RpcError``), read with grpcio-status.

    Fails the test if the call carries no ``google.rpc.Status`` or no ``ErrorInfo``.
    """
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    status = rpc_status.from_call(err)
    assert status is not None, "the error carries no google.rpc.Status"
    info = error_details_pb2.ErrorInfo()
    assert any(d.Unpack(info) for d in status.details if d.Is(info.DESCRIPTOR)), status
    return info


def _timed_out(condition: Callable[[], Any], timeout: float, message, last: Any) -> AssertionError:
    what = message() if callable(message) else message
    what = what or getattr(condition, "__qualname__", repr(condition))
    return AssertionError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")


def wait_until(
    condition: Callable[[], Any],
    timeout: float = 30.0,
    interval: float = 0.05,
    message: str | Callable[[], str] | None = None,
) -> Any:
    """Call ``condition`` until it returns a true value, and return that value.

    The one polling loop of the tests, like ``distributed.utils_test.wait_for``.
    ``condition`` is called at once and then every ``interval`` seconds; what it
    raises propagates (so a condition can fail the wait early, e.g. when the
    process it waits on exits).

    Args:
        condition: Called with no arguments.
        timeout: Seconds to wait in all. Defaults to 30.
        interval: Seconds between two calls. Defaults to 0.05.
        message: What is awaited, for the error: a string, or a callable that
            returns one when the time is up (to add, say, a log's tail).
            Defaults to the condition's name.

    Returns:
        The first true value ``condition`` returned.

    Raises:
        AssertionError: ``timeout`` passed; it names what was awaited and the
            last value seen.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise _timed_out(condition, timeout, message, value)
        time.sleep(interval)


async def async_wait_until(
    condition: Callable[[], Any],
    timeout: float = 30.0,
    interval: float = 0.05,
    message: str | Callable[[], str] | None = None,
) -> Any:
    """:func:`wait_until` for coroutines, like ``distributed.utils_test.async_poll_for``.

    ``condition`` may return a value or an awaitable of one; between calls the
    event loop runs.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise _timed_out(condition, timeout, message, value)
        await asyncio.sleep(interval)


# -- servers --------------------------------------------------------------------------


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
    log = open(log_path, "wb")  # noqa: SIM115  (the server writes it for its life; closed at stop)
    process = subprocess.Popen(
        [str(BIN / "dask-compute"), "serve", *(["--port", "0"] if port_flag else []), *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=full_env,
        cwd=cwd or ROOT,
    )
    log.close()

    def listening() -> re.Match | None:
        text = log_path.read_text(errors="replace")
        match = _LISTENING.search(text)
        if match is None and process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}:\n{text[-3000:]}")
        return match

    try:
        match = wait_until(
            listening,
            timeout,
            message=lambda: f"the server to listen:\n{log_path.read_text()[-3000:]}",
        )
    except AssertionError:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        raise
    return RunningServer(process, match.group(1), int(match.group(2)), log_path)


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


#: The session's cluster shape: two worker processes of two threads, two pool processes.
SESSION_SHAPE = {
    "n_workers": 2,
    "threads_per_worker": 2,
    "processes": True,
    "dashboard_address": ":0",
    "local_processes": 2,
    "functions": ("tests.functions",),
}


def own_core(**overrides):
    """A core of a test's own, not started: one in-process worker, records in memory."""
    from server.app import build_registry
    from server.config import Settings
    from server.core import ComputeCore

    base = {
        "n_workers": 1,
        "threads_per_worker": 1,
        "processes": False,
        "dashboard_address": "",
        "local_processes": 1,
        "job_store": "memory",
    }
    settings = Settings(**{**base, **overrides})
    return ComputeCore(settings, build_registry(settings))


def local_settings(directory: pathlib.Path, **overrides):
    """:class:`server.config.Settings` of an in-process server: 127.0.0.1:0, the
    session's cluster shape, job records in ``directory``; ``overrides`` win."""
    from server.config import Settings

    base = {
        **SESSION_SHAPE,
        "host": "127.0.0.1",
        "port": 0,
        "job_store": f"sqlite:///{directory / 'jobs.db'}",
    }
    return Settings(**{**base, **overrides})


class LocalServer:
    """The real core, cluster and gRPC server of ``settings``, in this process.

    The server is assembled as ``dask-compute serve`` assembles it (the
    registry, :class:`server.core.ComputeCore`, ``server.app.build_server`` on
    the settings' port, usually 0), and its event loop runs on a thread of its
    own, so synchronous tests call it over real gRPC. Tests that need a process
    of the server's own (signals, SIGKILL, restarts, its exit code, what its
    command line does) use :func:`start_server` instead.

    Args:
        settings: What to build it with.
        tracing: Its :class:`server.tracing.Tracing` (a test's own provider);
            ``None`` lets the settings and ``OTEL_*`` variables decide.

    Attributes:
        settings: What the server was built with.
        host: The address it listens on.
        port: The port it bound (known once started).
        job_store: The URL of its job records.
    """

    def __init__(self, settings, tracing=None) -> None:
        self.settings = settings
        self.tracing = tracing
        self.host = settings.host
        self.port = 0
        self.job_store = settings.job_store
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="local-server", daemon=True)

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 120) -> LocalServer:
        """Start the cluster, then the server; return once it serves."""
        self._thread.start()
        if not self._ready.wait(timeout):
            raise AssertionError(f"the in-process server did not start within {timeout}s")
        if self._failure is not None:
            self._thread.join(30)
            raise AssertionError("the in-process server did not start") from self._failure
        return self

    def stop(self, timeout: float = 60) -> None:
        """Stop as SIGTERM does (cancel what runs, answer waiters), then close the
        server, the core and the cluster, in that order."""
        if self._loop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"the in-process server did not stop within {timeout}s")
        if self._failure is not None:
            raise AssertionError("the in-process server failed") from self._failure

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:
            self._failure = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        from server.app import running
        from server.auth import Authenticator

        # As server.app.serve does, without its signal handlers (this is not the main thread).
        authenticator = Authenticator.from_settings(self.settings)
        async with running(self.settings, authenticator, self.tracing) as service:
            self.port = service.port
            self._loop = asyncio.get_running_loop()
            self._stopping = asyncio.Event()
            self._ready.set()
            await self._stopping.wait()
            await service.shut_down(0)


@contextlib.contextmanager
def serving_in_process(settings, tracing=None) -> Iterator[LocalServer]:
    """A started :class:`LocalServer` of ``settings`` (and ``tracing``), stopped on exit."""
    server = LocalServer(settings, tracing).start()
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


# -- a Dask cluster and a job store of a test's own -----------------------------------


@contextlib.contextmanager
def dask_process(args: Sequence[str], log: pathlib.Path) -> Iterator[subprocess.Popen]:
    """A ``dask ARGS`` process (scheduler or worker), logging to ``log``; ended on exit."""
    # Workers import the tests' task functions by name, as they would an operator's module.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [str(BIN / "dask"), *args], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()


def start_scheduler(port: int, tmp_path: pathlib.Path):
    """A real ``dask scheduler`` on 127.0.0.1:``port`` (a context manager)."""
    return dask_process(
        ["scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        tmp_path / "scheduler.log",
    )


def start_worker(port: int, tmp_path: pathlib.Path, name: str):
    """A real ``dask worker`` of one thread and 1 GiB named ``name`` (a context manager)."""
    return dask_process(
        ["worker", f"tcp://127.0.0.1:{port}", "--nthreads", "1", "--name", name, "--no-dashboard",
         "--memory-limit", "1GiB", "--local-directory", str(tmp_path / name)],
        tmp_path / f"{name}.log",
    )  # fmt: skip


def shared_cluster(stack: contextlib.ExitStack, tmp_path: pathlib.Path, workers: int = 2):
    """Start, on ``stack``, a PostgreSQL job store and a real Dask scheduler with
    ``workers`` workers, for replicas to share; returns the scheduler's port and the store's URL."""
    port = free_port()
    database = stack.enter_context(postgres_server())
    stack.enter_context(start_scheduler(port, tmp_path))
    for i in range(workers):
        stack.enter_context(start_worker(port, tmp_path, f"w{i}"))
    return port, database


# -- commands as a user runs them -----------------------------------------------------


def cli(
    *args: str, target: str | None = None, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """``dask-compute ARGS [--target TARGET]`` in a subprocess; its completed process."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT)}
    full_env.pop("DASK_COMPUTE_TARGET", None)
    full_env.update(env or {})
    command = [str(BIN / "dask-compute"), *args]
    if target is not None:
        command += ["--target", target]
    return subprocess.run(
        command, capture_output=True, check=False, text=True, timeout=timeout, env=full_env
    )


def ok(*args: str, **kwargs) -> str:
    """:func:`cli` that must exit 0; its standard output."""
    done = cli(*args, **kwargs)
    assert done.returncode == 0, f"{args}: {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


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
