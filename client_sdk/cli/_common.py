"""What the commands share: their options, connecting, errors as exit codes, waiting.

Client commands take ``--target`` and ``--token`` (:func:`client_command`,
which also turns the SDK's errors into messages and exit codes); named
function calls take FUNCTION, ARGS and the job's options as one
:class:`NamedCall` (:func:`function_call`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import click

from client_sdk._channel import DEFAULT_TARGET, DEFAULT_TIMEOUT, TLSConfig
from client_sdk.cli import _output as out
from client_sdk.client import ComputeClient
from client_sdk.errors import ComputeError, JobFailed, JobTimeout
from client_sdk.job import Job
from client_sdk.types import SCHEDULERS

logger = logging.getLogger(__name__)

#: Exit code of a wait that ran out of time.
EXIT_TIMEOUT = 3


class Timeout(click.ClickException):
    """A wait that ran out of time: its message, and exit code :data:`EXIT_TIMEOUT`."""

    exit_code = EXIT_TIMEOUT


target_option = click.option(
    "--target",
    envvar="DASK_COMPUTE_TARGET",
    default=DEFAULT_TARGET,
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
    default=DEFAULT_TIMEOUT,
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


def tls() -> Any:
    """The ``tls=`` of the group's --tls-ca/--tls-cert/--tls-key (False when none is given)."""
    params = click.get_current_context().find_root().params
    ca, cert, key = params.get("tls_ca"), params.get("tls_cert"), params.get("tls_key")
    if cert or key:
        return TLSConfig(ca=ca, cert=cert, key=key)
    return ca or False


def connect(target: str, token: str | None, timeout: float = DEFAULT_TIMEOUT) -> ComputeClient:
    """A client of ``target`` with the group's TLS options; a bad value is a usage error."""
    try:
        return ComputeClient(target, timeout=timeout, token=token, tls=tls())
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--target/--token/--tls-*") from exc


@contextlib.contextmanager
def reported() -> Iterator[None]:
    """Turn the SDK's errors into messages and exit codes."""
    try:
        yield
    except JobTimeout as exc:
        raise Timeout(str(exc)) from exc
    except ComputeError as exc:
        raise click.ClickException(str(exc)) from exc


def client_command(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add --target and --token, and report errors as messages."""

    @functools.wraps(func)
    def command(*args: Any, **kwargs: Any) -> Any:
        with reported():
            return func(*args, **kwargs)

    return target_option(token_option(command))


def parse_value(text: str) -> Any:
    """A command-line value as JSON (``3``, ``true``, ``"x"``), else as a plain string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_kwargs(items: tuple[str, ...]) -> dict[str, Any]:
    parsed = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"expected NAME=VALUE, got {item!r}", param_hint="--kwarg")
        parsed[name] = parse_value(value)
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
        job: Job = client.submit_function(
            self.function,
            *self.args,
            scheduler=self.scheduler,
            job_name=self.job_name,
            job_timeout=self.job_timeout,
            **self.kwargs,
        )
        return job


def function_call(func: Callable[..., Any]) -> Callable[..., Any]:
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
        parsed = [parse_value(a) for a in args]
        kw = parse_kwargs(kwargs)
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


def await_job(job: Job, timeout: float | None) -> Any:
    """Wait for ``job`` showing progress; its value, or raise what it raised.

    Raises:
        JobTimeout: ``timeout`` seconds passed first.
        click.ClickException: The job raised (its exception's type and message;
            the remote traceback too when the exception was not rebuilt here).
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
            except JobFailed as exc:  # not rebuilt here: its text
                kind = exc.type.removeprefix("builtins.")
                trace = f"\n{exc.remote_traceback.rstrip()}" if exc.remote_traceback else ""
                raise click.ClickException(f"job failed: {kind}: {exc.message}{trace}") from exc
            except ComputeError:
                raise
            except Exception as exc:  # raised by the job itself
                raise click.ClickException(f"job failed: {type(exc).__name__}: {exc}") from exc
            progress.tick()
    finally:
        progress.finish()
