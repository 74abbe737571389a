"""``dask-compute``: the command line of the Dask Compute Service.

``dask-compute serve`` starts a server (it lives in the ``server`` package and
is loaded only when asked for); every other command is a client of a running
server at ``--target`` (or ``DASK_COMPUTE_TARGET``). ``--json`` prints
machine-readable output on standard output; progress and errors go to
standard error.

Exit codes: 0 success, 1 failure (the job failed, or a call did), 2 bad
usage, 3 a wait ran out of time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import json
import logging
import sys
from collections.abc import Callable, Iterator
from typing import Any

import click

from client_sdk import _cli_output as out
from client_sdk._channel import TLSConfig
from client_sdk.client import ComputeClient
from client_sdk.errors import ComputeError, JobTimeout
from client_sdk.job import Job
from client_sdk.types import SCHEDULERS, JobState

logger = logging.getLogger(__name__)

_LAZY_COMMANDS = {"serve": "server.cli:serve"}
#: Exit code of a wait that ran out of time.
EXIT_TIMEOUT = 3


class _Group(click.Group):
    """A group whose ``serve`` command is imported only when used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *_LAZY_COMMANDS])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in _LAZY_COMMANDS:
            module, _, attr = _LAZY_COMMANDS[name].partition(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)


class _Timeout(click.ClickException):
    exit_code = EXIT_TIMEOUT


target_option = click.option(
    "--target",
    envvar="DASK_COMPUTE_TARGET",
    default="127.0.0.1:50051",
    show_default=True,
    help="Server address: host:port, grpc://host:port or grpcs://host:port (TLS). "
    "[env DASK_COMPUTE_TARGET]",
)
token_option = click.option(
    "--token",
    envvar="DASK_COMPUTE_TOKEN",
    default=None,
    help="Bearer token sent with every call. [env DASK_COMPUTE_TOKEN]",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
timeout_option = click.option(
    "--timeout",
    type=float,
    default=30.0,
    show_default=True,
    help="Deadline of each call, in seconds.",
)
scheduler_option = click.option(
    "--scheduler",
    type=click.Choice(SCHEDULERS),
    help="Scheduler to run on. [default: the server's]",
)
name_option = click.option(
    "--name", "job_name", default=None, help="A label for the job's record (jobs lists it)."
)
job_timeout_option = click.option(
    "--job-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Most seconds the job may run; past them the server cancels it. "
    "[default: the server's limit]",
)
kwarg_option = click.option(
    "--kwarg",
    "-k",
    "kwargs",
    multiple=True,
    metavar="NAME=VALUE",
    help="A keyword argument (repeatable); VALUE is JSON, else a string.",
)


def _tls() -> Any:
    """The ``tls=`` of the group's --tls-ca/--tls-cert/--tls-key (False when none is given)."""
    params = click.get_current_context().find_root().params
    ca, cert, key = params.get("tls_ca"), params.get("tls_cert"), params.get("tls_key")
    if cert or key:
        return TLSConfig(ca=ca, cert=cert, key=key)
    return ca or False


def _connect(target: str, token: str | None, timeout: float = 30.0) -> ComputeClient:
    try:
        return ComputeClient(target, timeout=timeout, token=token, tls=_tls())
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--target/--token/--tls-*") from exc


@contextlib.contextmanager
def _reported() -> Iterator[None]:
    """Turn the SDK's errors into messages and exit codes."""
    try:
        yield
    except JobTimeout as exc:
        raise _Timeout(str(exc)) from exc
    except ComputeError as exc:
        raise click.ClickException(str(exc)) from exc


def _client_command(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add --target and --token, and report errors as messages."""

    @functools.wraps(func)
    def command(*args: Any, **kwargs: Any) -> Any:
        with _reported():
            return func(*args, **kwargs)

    return target_option(token_option(command))


def _parse_value(text: str) -> Any:
    """A command-line value as JSON (``3``, ``true``, ``"x"``), else as a plain string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _parse_kwargs(items: tuple[str, ...]) -> dict[str, Any]:
    parsed = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"expected NAME=VALUE, got {item!r}", param_hint="--kwarg")
        parsed[name] = _parse_value(value)
    return parsed


@dataclasses.dataclass(frozen=True)
class NamedCall:
    """A named function call as given on the command line, its values parsed."""

    function: str
    args: list[Any]
    kwargs: dict[str, Any]
    scheduler: str | None
    job_name: str | None = None
    job_timeout: float | None = None

    def submit(self, client: ComputeClient) -> Job:
        """Submit the call; returns its job at once."""
        return client.submit_function(
            self.function,
            *self.args,
            scheduler=self.scheduler,
            job_name=self.job_name,
            job_timeout=self.job_timeout,
            **self.kwargs,
        )


def _function_call(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add FUNCTION, ARGS, --kwarg, --scheduler, --name and --job-timeout, as one ``call``."""

    @functools.wraps(func)
    def command(
        function: str,
        args: tuple[str, ...],
        kwargs: tuple[str, ...],
        scheduler: str | None,
        job_name: str | None,
        job_timeout: float | None,
        **options: Any,
    ) -> Any:
        parsed = [_parse_value(a) for a in args]
        kw = _parse_kwargs(kwargs)
        call = NamedCall(function, parsed, kw, scheduler, job_name, job_timeout)
        return func(call, **options)

    decorators = (
        job_timeout_option,
        name_option,
        scheduler_option,
        kwarg_option,
        click.argument("args", nargs=-1),
    )
    for decorator in decorators:
        command = decorator(command)
    return click.argument("function")(command)


def _await(job: Job, timeout: float | None) -> Any:
    """Wait for ``job`` showing progress; its value, or raise what it raised.

    Raises:
        JobTimeout: ``timeout`` seconds passed first.
        click.ClickException: The job raised (its exception's type and message).
    """
    progress = out.Progress(f"job {job.job_id}")
    remaining = timeout
    try:
        while True:
            step = progress.TICK if remaining is None else min(progress.TICK, remaining)
            try:
                return job.result(step)
            except JobTimeout as exc:
                if remaining is not None:
                    remaining -= step
                    if remaining <= 0:
                        raise JobTimeout(
                            f"job {job.job_id} did not finish within {timeout:g}s"
                        ) from exc
            except ComputeError:
                raise
            except Exception as exc:  # raised by the job itself
                raise click.ClickException(f"job failed: {type(exc).__name__}: {exc}") from exc
            progress.tick()
    finally:
        progress.finish()


_pem_file = click.Path(exists=True, dir_okay=False)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dask-compute-service")
@click.option(
    "--tls-ca",
    envvar="DASK_COMPUTE_TLS_CA",
    type=_pem_file,
    help="Client commands: PEM root certificate to check the server's TLS certificate "
    "against (turns TLS on). [env DASK_COMPUTE_TLS_CA]",
)
@click.option(
    "--tls-cert",
    envvar="DASK_COMPUTE_CLIENT_CERT",
    type=_pem_file,
    help="Client commands: PEM client certificate, for servers that require one "
    "(mutual TLS). [env DASK_COMPUTE_CLIENT_CERT]",
)
@click.option(
    "--tls-key",
    envvar="DASK_COMPUTE_CLIENT_KEY",
    type=_pem_file,
    help="Client commands: PEM private key of --tls-cert. [env DASK_COMPUTE_CLIENT_KEY]",
)
def main(tls_ca: str | None, tls_cert: str | None, tls_key: str | None) -> None:
    """Dask Compute Service: run work on a long-lived Dask cluster over gRPC.

    TLS options go before the command (dask-compute --tls-ca ca.pem info);
    a grpcs:// target turns TLS on with the system's roots.

    Exit codes: 0 success, 1 failure, 2 bad usage, 3 a wait ran out of time.
    """


@main.command()
@target_option
@click.option(
    "--timeout",
    type=float,
    default=30.0,
    show_default=True,
    help="Deadline of the check, in seconds.",
)
@click.option(
    "--service",
    default="",
    help="The service to ask about: '' (the default) for the process, "
    "compute.v1.ComputeService for readiness (it follows the Dask scheduler).",
)
def health(target: str, timeout: float, service: str) -> None:
    """Check the server's gRPC health service; exit 0 when SERVING, 1 otherwise."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from client_sdk._channel import credentials, parse_target

    address, scheme_tls = parse_target(target)
    tls = _tls() or scheme_tls
    channel = (
        grpc.secure_channel(address, credentials(tls)) if tls else grpc.insecure_channel(address)
    )
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as err:
            click.echo(f"UNREACHABLE: {err.code().name}: {err.details()}", err=True)
            sys.exit(1)
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    click.echo(status)
    sys.exit(0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1)


@main.command()
@_client_command
@timeout_option
@json_option
def info(target: str, token: str | None, timeout: float, as_json: bool) -> None:
    """Describe the cluster: workers, threads, memory, dashboard, versions."""
    with _connect(target, token, timeout) as client:
        cluster = client.info()
    if as_json:
        out.echo_json(cluster)
        return
    click.echo(f"scheduler:  {cluster.scheduler_address}")
    click.echo(f"dashboard:  {cluster.dashboard_link or '(off)'}")
    click.echo(
        f"workers:    {cluster.n_workers} ({cluster.worker_type or 'unknown'}), "
        f"threads: {cluster.total_threads}, memory: {cluster.total_memory / 2**30:.2f} GiB"
    )
    for w in cluster.workers:
        click.echo(
            f"  {w.address}  name={w.name} threads={w.nthreads} "
            f"memory={w.memory / 2**20:.0f}/{w.memory_limit / 2**20:.0f} MiB "
            f"tasks={w.tasks_in_flight}"
        )
    if cluster.versions is not None:
        v = cluster.versions
        click.echo(
            f"versions:   python {v.python}, dask {v.dask}, distributed {v.distributed}, "
            f"cloudpickle {v.cloudpickle}, service {v.service}"
        )
    click.echo(f"schedulers: {', '.join(cluster.schedulers)} (default {cluster.default_scheduler})")


@main.command()
@_client_command
@timeout_option
@json_option
def functions(target: str, token: str | None, timeout: float, as_json: bool) -> None:
    """List the named functions the server offers."""
    with _connect(target, token, timeout) as client:
        funcs = client.functions()
    if as_json:
        out.echo_json(funcs)
        return
    for f in funcs:
        summary = f.description.splitlines()[0] if f.description else ""
        click.echo(f"{f.signature}\n    {summary}")


@main.command()
@_function_call
@_client_command
@click.option(
    "--timeout",
    type=float,
    default=None,
    help="Seconds to wait; the job is cancelled when they pass. [default: no limit]",
)
@json_option
def run(
    call: NamedCall, target: str, token: str | None, timeout: float | None, as_json: bool
) -> None:
    """Run a named FUNCTION with ARGS (each parsed as JSON) and print its result.

    While it runs, a spinner (on a terminal) or a line every few seconds shows
    that it goes on. Interrupting (Ctrl-C) or running out of --timeout cancels
    the job.
    """
    with _connect(target, token) as client:
        job = call.submit(client)
        try:
            value = _await(job, timeout)
        except JobTimeout as exc:
            job.cancel(f"dask-compute run: not finished within {timeout:g}s")
            raise JobTimeout(f"{exc}; the job was cancelled") from exc
        except KeyboardInterrupt:
            job.cancel("dask-compute run was interrupted")
            raise
    out.echo_value(value, as_json)


@main.command()
@_function_call
@_client_command
@timeout_option
@json_option
def submit(call: NamedCall, target: str, token: str | None, timeout: float, as_json: bool) -> None:
    """Submit a named FUNCTION with ARGS (each parsed as JSON) and print the job's id."""
    with _connect(target, token, timeout) as client:
        job = call.submit(client)
        record = job.info()
    if as_json:
        out.echo_json(record)
    else:
        click.echo(job.job_id)


@main.command()
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice([s.value for s in JobState]),
    help="Only jobs in this state (repeatable).",
)
@click.option(
    "--limit", type=click.IntRange(min=1), default=50, show_default=True, help="Most jobs to list."
)
@_client_command
@timeout_option
@json_option
def jobs(
    states: tuple[str, ...],
    limit: int,
    target: str,
    token: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """List jobs, newest first."""
    with _connect(target, token, timeout) as client:
        records = list(client.list_jobs(states, limit=limit, page_size=min(limit, 1000)))
    if as_json:
        out.echo_json(records)
    elif records:
        click.echo(out.job_table(records))
    else:
        click.echo("no jobs", err=True)


@main.command()
@click.argument("job_id", metavar="JOB")
@_client_command
@timeout_option
@json_option
def status(job_id: str, target: str, token: str | None, timeout: float, as_json: bool) -> None:
    """Show a JOB's record: state, scheduler, times, error."""
    with _connect(target, token, timeout) as client:
        record = client.get_job(job_id)
    if as_json:
        out.echo_json(record)
    else:
        click.echo(out.job_details(record))


@main.command()
@click.argument("job_id", metavar="JOB")
@_client_command
@click.option(
    "--timeout",
    type=float,
    default=None,
    help="Seconds to wait; the job goes on when they pass (exit 3). [default: no limit]",
)
@json_option
def wait(job_id: str, target: str, token: str | None, timeout: float | None, as_json: bool) -> None:
    """Wait for a JOB to finish and print its result.

    While it runs, a spinner (on a terminal) or a line every few seconds shows
    that it goes on.
    """
    with _connect(target, token) as client:
        value = _await(client.job(job_id), timeout)
    out.echo_value(value, as_json)


@main.command()
@click.argument("job_id", metavar="JOB")
@_client_command
@click.option(
    "--timeout",
    type=float,
    default=None,
    help="Seconds to watch; the job goes on when they pass (exit 3). [default: no limit]",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print each update as a line of JSON (JSON Lines) instead of drawing a bar.",
)
def watch(
    job_id: str, target: str, token: str | None, timeout: float | None, as_json: bool
) -> None:
    """Follow a JOB until it finishes: its state and Dask tasks done out of total.

    On a terminal a progress bar is redrawn in place (on standard error);
    otherwise a line is written when the state changes and every few seconds.
    The last line, on standard output, says how the job ended. Exit 0 when it
    succeeded, 1 when it failed or was cancelled, 3 when --timeout passed.
    Interrupting (Ctrl-C) stops watching; the job goes on (use ``wait`` for
    its value, ``cancel`` to stop it).
    """
    last = None
    with _connect(target, token) as client:
        bar = out.ProgressBar(job_id)
        try:
            for update in client.watch(job_id, timeout):
                last = update
                if as_json:
                    click.echo(json.dumps(out.plain(update), default=repr))
                else:
                    bar.update(update)
        finally:
            bar.finish()
    if last is None:  # pragma: no cover - the server always reports the job first
        raise click.ClickException(f"no report on job {job_id}")
    if not as_json:
        click.echo(out.watch_summary(last))
    if last.job.state is not JobState.SUCCEEDED:
        sys.exit(1)


@main.command()
@click.argument("job_id", metavar="JOB")
@click.option(
    "--reason",
    default="cancelled from the command line",
    show_default=True,
    help="Recorded with the job.",
)
@_client_command
@timeout_option
@json_option
def cancel(
    job_id: str, reason: str, target: str, token: str | None, timeout: float, as_json: bool
) -> None:
    """Cancel a queued or running JOB."""
    with _connect(target, token, timeout) as client:
        cancelled = client.cancel(job_id, reason)
        record = client.get_job(job_id)
    if as_json:
        out.echo_json({"job_id": job_id, "cancelled": cancelled, "state": record.state})
    elif cancelled:
        click.echo(f"job {job_id} cancelled")
    else:
        click.echo(f"job {job_id} not cancelled: it already {record.state.value}")
