"""The commands about jobs: run, submit, jobs, status, wait, watch and cancel."""

from __future__ import annotations

import json
import logging
import sys

import click

from client_sdk.cli import _common as common
from client_sdk.cli import _output as out
from client_sdk.errors import JobTimeout
from client_sdk.types import JobState

logger = logging.getLogger(__name__)


@click.command()
@common.function_call
@common.client_command
@click.option(
    "--timeout",
    type=float,
    default=None,
    help="Seconds to wait; the job is cancelled when they pass. [default: no limit]",
)
@common.json_option
def run(
    call: common.NamedCall, target: str, token: str | None, timeout: float | None, as_json: bool
) -> None:
    """Run a named FUNCTION with ARGS (each parsed as JSON) and print its result.

    While it runs, a spinner (on a terminal) or a line every few seconds shows
    that it goes on. Interrupting (Ctrl-C) or running out of --timeout cancels
    the job.
    """
    with common.connect(target, token) as client:
        job = call.submit(client)
        try:
            value = common.await_job(job, timeout)
        except JobTimeout as exc:
            job.cancel(f"dask-compute run: not finished within {timeout:g}s")
            raise JobTimeout(f"{exc}; the job was cancelled") from exc
        except KeyboardInterrupt:
            job.cancel("dask-compute run was interrupted")
            raise
    out.echo_value(value, as_json)


@click.command()
@common.function_call
@common.client_command
@common.timeout_option
@common.json_option
def submit(
    call: common.NamedCall, target: str, token: str | None, timeout: float, as_json: bool
) -> None:
    """Submit a named FUNCTION with ARGS (each parsed as JSON) and print the job's id."""
    with common.connect(target, token, timeout) as client:
        job = call.submit(client)
        record = job.info()
    if as_json:
        out.echo_json(record)
    else:
        click.echo(job.job_id)


@click.command()
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
@common.client_command
@common.timeout_option
@common.json_option
def jobs(
    states: tuple[str, ...],
    limit: int,
    target: str,
    token: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """List jobs, newest first."""
    with common.connect(target, token, timeout) as client:
        records = list(client.list_jobs(states, limit=limit, page_size=min(limit, 1000)))
    if as_json:
        out.echo_json(records)
    elif records:
        click.echo(out.job_table(records))
    else:
        click.echo("no jobs", err=True)


@click.command()
@click.argument("job_id", metavar="JOB")
@common.client_command
@common.timeout_option
@common.json_option
def status(job_id: str, target: str, token: str | None, timeout: float, as_json: bool) -> None:
    """Show a JOB's record: state, scheduler, times, error."""
    with common.connect(target, token, timeout) as client:
        record = client.get_job(job_id)
    if as_json:
        out.echo_json(record)
    else:
        click.echo(out.job_details(record))


@click.command()
@click.argument("job_id", metavar="JOB")
@common.client_command
@click.option(
    "--timeout",
    type=float,
    default=None,
    help="Seconds to wait; the job goes on when they pass (exit 3). [default: no limit]",
)
@click.option(
    "--trust-pickles",
    is_flag=True,
    help="Load the pickled result or exception of another caller's job, which runs code of "
    "the caller that submitted it (your own jobs' pickles are loaded without it). Without it "
    "a failure shows its type, message and traceback text, and a pickled result is refused.",
)
@common.json_option
def wait(
    job_id: str,
    target: str,
    token: str | None,
    timeout: float | None,
    trust_pickles: bool,
    as_json: bool,
) -> None:
    """Wait for a JOB to finish and print its result.

    While it runs, a spinner (on a terminal) or a line every few seconds shows
    that it goes on.
    """
    with common.connect(target, token) as client:
        value = common.await_job(client.job(job_id, trust=trust_pickles), timeout)
    out.echo_value(value, as_json)


@click.command()
@click.argument("job_id", metavar="JOB")
@common.client_command
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
    with common.connect(target, token) as client:
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


@click.command()
@click.argument("job_id", metavar="JOB")
@click.option(
    "--reason",
    default="cancelled from the command line",
    show_default=True,
    help="Recorded with the job.",
)
@common.client_command
@common.timeout_option
@common.json_option
def cancel(
    job_id: str, reason: str, target: str, token: str | None, timeout: float, as_json: bool
) -> None:
    """Cancel a queued or running JOB."""
    with common.connect(target, token, timeout) as client:
        cancelled = client.cancel(job_id, reason)
        record = client.get_job(job_id)
    if as_json:
        out.echo_json({"job_id": job_id, "cancelled": cancelled, "state": record.state})
    elif cancelled:
        click.echo(f"job {job_id} cancelled")
    else:
        click.echo(f"job {job_id} not cancelled: it already {record.state.value}")
