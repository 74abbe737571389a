"""``dask-compute``: the command line of the Dask Compute Service.

``dask-compute serve`` starts a server (it lives in the ``server`` package and
is loaded only when asked for); every other command is a client of a running
server at ``--target`` (or ``DASK_COMPUTE_TARGET``).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import sys
from typing import Any

import click

from client_sdk.client import ComputeClient
from client_sdk.errors import ComputeError

_LAZY_COMMANDS = {"serve": "server.cli:serve"}


class _Group(click.Group):
    """A group whose ``serve`` command is imported only when used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *_LAZY_COMMANDS])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in _LAZY_COMMANDS:
            module, _, attr = _LAZY_COMMANDS[name].partition(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)


target_option = click.option(
    "--target",
    envvar="DASK_COMPUTE_TARGET",
    default="127.0.0.1:50051",
    show_default=True,
    help="Server address, host:port or grpc://host:port. [env DASK_COMPUTE_TARGET]",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
timeout_option = click.option(
    "--timeout", type=float, default=30.0, show_default=True, help="Deadline of each call, in seconds."
)


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(_plain(value), indent=2, default=str))


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return None
    return value


def _client(target: str, timeout: float) -> ComputeClient:
    return ComputeClient(target, timeout=timeout)


def _parse_value(text: str) -> Any:
    """A command-line value as JSON (``3``, ``true``, ``"x"``), else as a plain string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dask-compute-service")
def main() -> None:
    """Dask Compute Service: run work on a long-lived Dask cluster over gRPC."""


@main.command()
@target_option
@timeout_option
def health(target: str, timeout: float) -> None:
    """Check the server's gRPC health service; exit 0 when SERVING, 1 otherwise."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from client_sdk.client import normalize_target

    with grpc.insecure_channel(normalize_target(target)) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.RpcError as err:
            click.echo(f"UNREACHABLE: {err.code().name}: {err.details()}", err=True)
            sys.exit(1)
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    click.echo(status)
    sys.exit(0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1)


@main.command()
@target_option
@timeout_option
@json_option
def info(target: str, timeout: float, as_json: bool) -> None:
    """Describe the cluster: workers, threads, memory, dashboard, versions."""
    with _client(target, timeout) as client:
        cluster = client.info()
    if as_json:
        _echo_json(cluster)
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
            f"memory={w.memory / 2**20:.0f}/{w.memory_limit / 2**20:.0f} MiB tasks={w.tasks_in_flight}"
        )
    if cluster.versions is not None:
        v = cluster.versions
        click.echo(
            f"versions:   python {v.python}, dask {v.dask}, distributed {v.distributed}, "
            f"cloudpickle {v.cloudpickle}, service {v.service}"
        )
    click.echo(f"schedulers: {', '.join(cluster.schedulers)} (default {cluster.default_scheduler})")


@main.command()
@target_option
@timeout_option
@json_option
def functions(target: str, timeout: float, as_json: bool) -> None:
    """List the named functions the server offers."""
    with _client(target, timeout) as client:
        funcs = client.functions()
    if as_json:
        _echo_json(funcs)
        return
    for f in funcs:
        summary = f.description.splitlines()[0] if f.description else ""
        click.echo(f"{f.signature}\n    {summary}")


@main.command()
@click.argument("function")
@click.argument("args", nargs=-1)
@click.option("--kwarg", "-k", "kwargs", multiple=True, metavar="NAME=VALUE", help="A keyword argument (repeatable); VALUE is JSON.")
@click.option("--scheduler", type=click.Choice(["distributed", "threads", "processes", "synchronous"]), help="Scheduler to run on. [default: the server's]")
@target_option
@click.option("--timeout", type=float, default=None, help="Deadline in seconds. [default: none]")
@json_option
def run(
    function: str,
    args: tuple[str, ...],
    kwargs: tuple[str, ...],
    scheduler: str | None,
    target: str,
    timeout: float | None,
    as_json: bool,
) -> None:
    """Run a named FUNCTION with ARGS (each parsed as JSON) and print its result."""
    parsed_kwargs = {}
    for item in kwargs:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"expected NAME=VALUE, got {item!r}", param_hint="--kwarg")
        parsed_kwargs[name] = _parse_value(value)
    with _client(target, 30.0) as client:
        try:
            value = client.run(
                function,
                *[_parse_value(a) for a in args],
                scheduler=scheduler,
                timeout=timeout,
                **parsed_kwargs,
            )
        except ComputeError as exc:
            raise click.ClickException(str(exc)) from exc
        except Exception as exc:  # the job itself raised
            raise click.ClickException(f"job failed: {type(exc).__name__}: {exc}") from exc
    if as_json:
        click.echo(json.dumps(value, default=repr))
    else:
        click.echo(value if isinstance(value, str) else json.dumps(value, default=repr))
