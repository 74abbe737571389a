"""The commands about the server and its cluster: ``health``, ``info`` and ``functions``."""

from __future__ import annotations

import logging
import sys
from typing import cast

import click

from client_sdk.cli import _common as common
from client_sdk.cli import _output as out

logger = logging.getLogger(__name__)


@click.command()
@common.target_option
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
    tls = common.tls() or scheme_tls
    # (credentials() is None only for a plaintext channel)
    channel = (
        grpc.secure_channel(address, cast(grpc.ChannelCredentials, credentials(tls)))
        if tls
        else grpc.insecure_channel(address)
    )
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            request = health_pb2.HealthCheckRequest(service=service)
            # types-grpcio-health-checking's HealthStub declares none of its methods.
            response = stub.Check(request, timeout=timeout)  # type: ignore[attr-defined]
        except grpc.RpcError as err:
            click.echo(f"UNREACHABLE: {err.code().name}: {err.details()}", err=True)
            sys.exit(1)
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    click.echo(status)
    sys.exit(0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1)


@click.command()
@common.client_command
@common.timeout_option
@common.json_option
def info(target: str, token: str | None, timeout: float, as_json: bool) -> None:
    """Describe the cluster: workers, threads, memory, dashboard, versions."""
    with common.connect(target, token, timeout) as client:
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


@click.command()
@common.client_command
@common.timeout_option
@common.json_option
def functions(target: str, token: str | None, timeout: float, as_json: bool) -> None:
    """List the named functions the server offers."""
    with common.connect(target, token, timeout) as client:
        funcs = client.functions()
    if as_json:
        out.echo_json(funcs)
        return
    for f in funcs:
        summary = f.description.splitlines()[0] if f.description else ""
        click.echo(f"{f.signature}\n    {summary}")
