"""``dask-compute``: the command line of the Dask Compute Service.

``dask-compute serve`` starts a server (it lives in the ``server`` package and
is loaded only when asked for); every other command is a client of a running
server at ``--target`` (or ``DASK_COMPUTE_TARGET``): ``health``, ``info`` and
``functions`` (:mod:`._cluster`); ``run``, ``submit``, ``jobs``, ``status``,
``wait``, ``watch`` and ``cancel`` (:mod:`._jobs`). ``--json`` prints
machine-readable output on standard output; progress and errors go to
standard error.

Exit codes: 0 success, 1 failure (the job failed, or a call did), 2 bad
usage, 3 a wait ran out of time.
"""

from __future__ import annotations

import importlib
import logging

import click

from client_sdk.cli import _cluster, _jobs

logger = logging.getLogger(__name__)

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


for _command in (
    _cluster.health,
    _cluster.info,
    _cluster.functions,
    _jobs.run,
    _jobs.submit,
    _jobs.jobs,
    _jobs.status,
    _jobs.wait,
    _jobs.watch,
    _jobs.cancel,
):
    main.add_command(_command)
