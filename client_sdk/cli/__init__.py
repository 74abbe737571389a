"""``dask-compute``: the command line of the Dask Compute Service.

The commands here are clients of a running server at ``--target`` (or
``DASK_COMPUTE_TARGET``): ``health``, ``info`` and ``functions``
(:mod:`._cluster`); ``run``, ``submit``, ``jobs``, ``status``, ``wait``,
``watch`` and ``cancel`` (:mod:`._jobs`). Other installed packages add
commands through the :data:`COMMANDS_GROUP` entry-point group; the server
package registers ``serve`` there. So the SDK never names the server, and an
install without it (or where it cannot be imported) lists no ``serve`` and
works all the same. ``--json`` prints machine-readable output on standard
output; progress and errors go to standard error.

Exit codes: 0 success, 1 failure (the job failed, or a call did), 2 bad
usage, 3 a wait ran out of time.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging

import click

from client_sdk.cli import _cluster, _jobs

logger = logging.getLogger(__name__)

#: The entry-point group in which installed packages register ``dask-compute`` commands.
COMMANDS_GROUP = "dask_compute.commands"


@functools.cache
def _registered() -> dict[str, importlib.metadata.EntryPoint]:
    """The commands installed packages register, by name, not loaded yet."""
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=COMMANDS_GROUP)}


@functools.cache
def _load(name: str) -> click.Command | str:
    """The registered command ``name``, or why it cannot be loaded here."""
    entry_point = _registered()[name]
    try:
        command = entry_point.load()
    except ImportError as exc:  # for example the server's command in a client-only install
        logger.debug("command %r (%s) not loaded: %s", name, entry_point.value, exc)
        # The error on a line of its own: the server's says what to install.
        return f"{entry_point.value} cannot be imported:\n  {exc}"
    if not isinstance(command, click.Command):
        return f"{entry_point.value} is not a click command."
    return command


class _Group(click.Group):
    """The group of the SDK's own commands and of those registered in :data:`COMMANDS_GROUP`.

    A registered command is imported when it is used or listed, never when
    this module is imported; one that cannot be imported is left out.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        loadable = [name for name in _registered() if isinstance(_load(name), click.Command)]
        return sorted({*super().list_commands(ctx), *loadable})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is None and name in _registered():
            loaded = _load(name)
            command = loaded if isinstance(loaded, click.Command) else None
        return command

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0] if args else None
        registered = name in _registered() and name not in self.commands
        if registered and not isinstance(reason := _load(name), click.Command):
            ctx.fail(f"No such command {name!r}: an installed package registers it, but {reason}")
        return super().resolve_command(ctx, args)


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
