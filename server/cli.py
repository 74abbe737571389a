"""``dask-compute serve``: the server's command line.

The server package adds it to ``dask-compute`` through the
``dask_compute.commands`` entry point (``pyproject.toml``), so the SDK's
command line never imports the server by name.

Every flag has a ``DASK_COMPUTE_*`` environment variable; a flag wins over its
variable, which wins over the default (:class:`server.config.Settings`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

import click

from server import logwriter
from server.config import SCHEDULERS, Settings, SettingsError


def _env(name: str) -> str:
    return Settings.env_var(name)


@click.command("serve", context_settings={"max_content_width": 100})
@click.option("--host", help=f"Address to listen on. [default: 127.0.0.1; env {_env('host')}]")
@click.option(
    "--port",
    type=int,
    help=f"Port to listen on; 0 picks a free one. [default: 50051; env {_env('port')}]",
)
@click.option(
    "--scheduler-address",
    help=f"Use this existing Dask scheduler instead of starting a LocalCluster. [env {_env('scheduler_address')}]",
)
@click.option(
    "--n-workers",
    type=int,
    help=f"LocalCluster workers. [default: sized to the machine; env {_env('n_workers')}]",
)
@click.option(
    "--threads-per-worker",
    type=int,
    help=f"Threads per LocalCluster worker. [default: chosen by Dask; env {_env('threads_per_worker')}]",
)
@click.option(
    "--processes/--no-processes",
    default=None,
    help=f"LocalCluster workers as processes, or as threads in the server. [default: processes; env {_env('processes')}]",
)
@click.option(
    "--memory-limit",
    help=f"Memory limit per LocalCluster worker: 'auto', bytes or e.g. '4GiB'. [default: auto; env {_env('memory_limit')}]",
)
@click.option(
    "--dashboard-address",
    help=f"Where to serve the Dask dashboard, e.g. ':8787' or ':0'; '' turns it off. [default: :8787; env {_env('dashboard_address')}]",
)
@click.option(
    "--functions",
    multiple=True,
    help=f"Python module whose named functions to offer (repeatable). [env {_env('functions')}, comma-separated]",
)
@click.option(
    "--default-scheduler",
    type=click.Choice(SCHEDULERS),
    help=f"Scheduler of jobs that name none. [default: distributed; env {_env('default_scheduler')}]",
)
@click.option(
    "--local-threads",
    type=int,
    help=f"Threads of the 'threads' scheduler's pool. [default: CPU count; env {_env('local_threads')}]",
)
@click.option(
    "--local-processes",
    type=int,
    help=f"Processes of the 'processes' scheduler's pool. [default: CPU count; env {_env('local_processes')}]",
)
@click.option(
    "--result-ttl",
    type=float,
    help=f"Seconds a finished job's result stays readable. [default: 600; env {_env('result_ttl')}]",
)
@click.option(
    "--job-ttl",
    type=float,
    help=f"Seconds a finished job's record stays listed. [default: 3600; env {_env('job_ttl')}]",
)
@click.option(
    "--max-job-seconds",
    type=float,
    help=f"Longest a job may run, in seconds; 0 means no limit. [default: 0; env {_env('max_job_seconds')}]",
)
@click.option(
    "--max-pending-jobs",
    type=int,
    help=f"Most unfinished jobs in all. [default: 100000; env {_env('max_pending_jobs')}]",
)
@click.option(
    "--max-jobs-per-caller",
    type=int,
    help=f"Most unfinished jobs of one caller. [default: 10000; env {_env('max_jobs_per_caller')}]",
)
@click.option(
    "--local-pool-share",
    type=float,
    help=f"With tokens or client certificates: the fraction of each local pool (threads, processes, synchronous) one caller may hold at once. [default: 0.5; env {_env('local_pool_share')}]",
)
@click.option(
    "--max-abandoned-threads",
    type=int,
    help=f"Calls of cancelled jobs each local pool keeps running (threads cannot be stopped) before it refuses new jobs with RESOURCE_EXHAUSTED. [default: 16; env {_env('max_abandoned_threads')}]",
)
@click.option(
    "--job-store",
    help=f"Where job records live: 'memory', sqlite:///PATH or postgresql+psycopg://... [default: sqlite in $XDG_STATE_HOME/dask-compute/jobs.db; env {_env('job_store')}]",
)
@click.option(
    "--stored-result-bytes",
    type=int,
    help=f"Results up to this many bytes are stored with their record and survive a restart. [default: 1048576; env {_env('stored_result_bytes')}]",
)
@click.option(
    "--inline-result-bytes",
    type=int,
    help=f"Results up to this size come back inside Run and WaitJob; larger ones through GetJobResult (at most 3 MiB). [default: 1048576; env {_env('inline_result_bytes')}]",
)
@click.option(
    "--result-chunk-bytes",
    type=int,
    help=f"Default chunk size of GetJobResult streams (1 KiB to 3 MiB). [default: 1048576; env {_env('result_chunk_bytes')}]",
)
@click.option(
    "--object-ttl",
    type=float,
    help=f"Seconds an uploaded object is kept after its last use. [default: 3600; env {_env('object_ttl')}]",
)
@click.option(
    "--max-object-bytes",
    type=int,
    help=f"Largest object PutObject accepts. [default: 4 GiB; env {_env('max_object_bytes')}]",
)
@click.option(
    "--metrics-port",
    type=int,
    help=f"Serve Prometheus metrics on http://HOST:PORT/metrics; 0 turns them off. [default: 0; env {_env('metrics_port')}]",
)
@click.option(
    "--replica-lease",
    type=float,
    help=f"With a shared (PostgreSQL) job store: seconds a replica may go unseen before "
    f"another takes over its unfinished jobs (re-run if retryable, else failed). "
    f"[default: 30; env {_env('replica_lease')}]",
)
@click.option(
    "--max-argument-bytes",
    type=int,
    help=f"Most bytes of JSON arguments (call.args and call.kwargs of all its jobs) in one "
    f"request; past it INVALID_ARGUMENT. [default: 4194304 (4 MiB); env {_env('max_argument_bytes')}]",
)
@click.option(
    "--max-argument-values",
    type=int,
    help=f"Most JSON values in one job's arguments; past it INVALID_ARGUMENT. "
    f"[default: 1000000; env {_env('max_argument_values')}]",
)
@click.option(
    "--max-uploads-per-caller",
    type=int,
    help=f"Most PutObject uploads one caller may have in progress; past it RESOURCE_EXHAUSTED. "
    f"[default: 4; env {_env('max_uploads_per_caller')}]",
)
@click.option(
    "--max-upload-bytes-per-caller",
    type=int,
    help=f"Most bytes one caller's uploads in progress may hold in the server, counted as they "
    f"arrive; past it RESOURCE_EXHAUSTED. [default: 4 GiB; env {_env('max_upload_bytes_per_caller')}]",
)
@click.option(
    "--max-upload-bytes",
    type=int,
    help=f"Most bytes all callers' uploads in progress may hold in the server together, counted "
    f"as they arrive; past it RESOURCE_EXHAUSTED. An upload is held here until it is scattered "
    f"to a worker, and the workers share the machine. [default: a quarter of the memory this "
    f"process may use, container limits honoured; env {_env('max_upload_bytes')}]",
)
@click.option(
    "--otlp-endpoint",
    help=f"Export traces (a span per RPC and per job) with OTLP over gRPC to this collector: "
    f"http://HOST:PORT for plaintext, https://HOST:PORT for TLS. Without it the standard "
    f"OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_TRACES_EXPORTER variables decide; with neither, "
    f"nothing is traced. [env {_env('otlp_endpoint')}]",
)
@click.option(
    "--shutdown-grace",
    type=float,
    help=f"Seconds running calls get to finish on SIGTERM. [default: 25; env {_env('shutdown_grace')}]",
)
@click.option(
    "--max-message-bytes",
    type=int,
    help=f"Largest request or response, in bytes; a bigger request is refused with "
    f"RESOURCE_EXHAUSTED. [default: 67108864 (64 MiB), at least 4 MiB; env {_env('max_message_bytes')}]",
)
@click.option(
    "--tokens-file",
    type=click.Path(dir_okay=False),
    help=f"Bearer tokens and their permissions, one 'NAME PERMISSIONS TOKEN' per line; SIGHUP reloads it. "
    f"The same content may come from DASK_COMPUTE_TOKENS instead (no flag: tokens never go in a "
    f"command line). [env {_env('tokens_file')}]",
)
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False),
    help=f"PEM certificate (chain) of the server: the port speaks TLS only. [env {_env('tls_cert')}]",
)
@click.option(
    "--tls-key",
    type=click.Path(dir_okay=False),
    help=f"PEM private key of --tls-cert. [env {_env('tls_key')}]",
)
@click.option(
    "--tls-client-ca",
    type=click.Path(dir_okay=False),
    help=f"PEM CA that client certificates must chain to (mutual TLS); a certificate's subject CN "
    f"may stand in for a token ('cert:CN' entries). [env {_env('tls_client_ca')}]",
)
@click.option(
    "--pickled-work/--no-pickled-work",
    default=None,
    help=f"Accept pickled callables and Dask graphs from callers with the 'code' permission, or from "
    f"nobody (named functions only). [default: accept; env {_env('pickled_work')}]",
)
@click.option(
    "--insecure-no-auth-on-network",
    is_flag=True,
    default=None,
    help=f"Listen on a non-loopback address with no tokens: anyone who can reach the port may call "
    f"(pickled work stays refused). [env {_env('insecure_no_auth_on_network')}]",
)
@click.option(
    "--allow-pickled-work-without-auth",
    is_flag=True,
    default=None,
    help=f"With --insecure-no-auth-on-network, also run pickled work (code) from anyone. "
    f"[env {_env('allow_pickled_work_without_auth')}]",
)
@click.option(
    "--log-level",
    default=lambda: os.environ.get("DASK_COMPUTE_LOG_LEVEL", "INFO"),
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    help="Log level. [default: INFO; env DASK_COMPUTE_LOG_LEVEL]",
)
def serve(log_level: str, functions: tuple[str, ...], **flags: object) -> None:
    """Start the gRPC service on an embedded LocalCluster (or an existing scheduler)."""
    log_writer = logwriter.install(log_level.upper())
    try:
        _serve(log_level, functions, flags)
    finally:
        log_writer.close()  # writes what is queued
    # Everything the server owns is closed by now. A job abandoned on the
    # threads or synchronous scheduler may still hold a pool thread (Python
    # cannot stop a thread), and the interpreter would join it at exit: a
    # cancelled sleep(3600) would hold up the shutdown for an hour. Leave now.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _serve(log_level: str, functions: tuple[str, ...], flags: dict[str, object]) -> None:
    try:
        settings = Settings.from_env(os.environ, functions=functions or None, **flags)
    except (SettingsError, TypeError) as exc:
        raise click.UsageError(str(exc)) from exc
    import distributed  # noqa: F401  (its import sets its log levels: set ours after it)

    from server.app import serve as run_server

    # Dask's own chatter stays at WARNING, as LocalCluster's silence_logs does.
    dask_level = max(logging.WARNING, logging.getLevelName(log_level.upper()))
    for name in ("distributed", "dask"):
        logging.getLogger(name).setLevel(dask_level)

    try:
        asyncio.run(run_server(settings))
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from exc
