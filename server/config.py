"""The server's settings: one frozen object, filled from CLI flags and ``DASK_COMPUTE_*``.

Precedence is CLI flag > environment variable > default. :meth:`Settings.from_env`
takes the environment as an argument so tests never touch ``os.environ``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger(__name__)

ENV_PREFIX = "DASK_COMPUTE_"

#: Scheduler names a job may ask for, in the order GetClusterInfo lists them.
SCHEDULERS = ("distributed", "threads", "processes", "synchronous")


class SettingsError(ValueError):
    """A setting has a value the server cannot use."""


def _cpu_count() -> int:
    # Dask's count honours CPU affinity and cgroup quotas (a container's
    # limit), where os.cpu_count() would give the whole node's.
    from dask.system import CPU_COUNT

    return CPU_COUNT or 1


def _memory_limit() -> int:
    # Distributed's figure honours cgroup limits (a container's) and RLIMIT_RSS,
    # where psutil.virtual_memory() would give the whole node's.
    from distributed.system import MEMORY_LIMIT

    return int(MEMORY_LIMIT)


#: Kubernetes sets <SERVICE>_PORT=tcp://IP:PORT in every pod for each Service; a
#: Service named "dask-compute" would so set DASK_COMPUTE_PORT.
_SERVICE_LINK = re.compile(r"^tcp://[^/]+:\d+$")


def _parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"expected a boolean (true/false), got {value!r}")


def _parse_optional_int(value: str) -> int | None:
    value = value.strip()
    return None if value.lower() in {"", "auto", "none"} else int(value)


def _parse_list(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything the server can be told.

    Each field has a ``DASK_COMPUTE_<FIELD>`` environment variable (for example
    ``DASK_COMPUTE_N_WORKERS``) and a CLI flag (``--n-workers``).

    Attributes:
        host: Address to bind the gRPC server to. Defaults to loopback.
        port: TCP port; 0 picks a free one (the chosen port is logged).
        scheduler_address: An existing Dask scheduler to use instead of
            starting a LocalCluster. Empty starts a LocalCluster.
        n_workers: LocalCluster workers; ``None`` sizes to the machine, as
            ``LocalCluster()`` does.
        threads_per_worker: Threads per LocalCluster worker; ``None`` lets
            Dask choose.
        processes: Whether LocalCluster workers are processes (``True``) or
            threads in the server's process.
        memory_limit: LocalCluster memory limit per worker ("auto", bytes, or
            a string such as "4GiB").
        dashboard_address: Where LocalCluster serves the Dask dashboard
            (":8787", ":0" for any free port); empty turns it off.
        functions: Python modules to import for their named functions.
        default_scheduler: Scheduler of jobs that do not name one.
        local_threads: Threads in the pool of the ``threads`` scheduler;
            ``None`` means the machine's CPU count.
        local_processes: Processes in the pool of the ``processes``
            scheduler; ``None`` means the machine's CPU count.
        result_ttl: Seconds a finished job's result stays readable.
        job_ttl: Seconds a finished job's record stays listed.
        max_jobs: Most job records kept; the oldest finished ones go first.
        shutdown_grace: Seconds that running RPCs get to finish on SIGTERM.
        max_message_bytes: Largest gRPC message accepted or sent, in bytes.
        max_job_seconds: Longest a job may run; a job's own timeout is capped
            to it. 0 means no limit.
        max_pending_jobs: Most unfinished (queued or running) jobs in all;
            past it new jobs are refused with RESOURCE_EXHAUSTED.
        max_jobs_per_caller: Most unfinished jobs of one caller.
        local_pool_share: With credentials configured, the fraction of each
            local pool (``threads``, ``processes``, the driver threads of
            ``synchronous``) one caller's jobs may hold at once; its other
            jobs wait for its own. Without credentials every call is the
            same caller, so the share does not apply.
        max_abandoned_threads: Calls of cancelled jobs that each local pool
            keeps running (a thread cannot be stopped) before it refuses new
            jobs with RESOURCE_EXHAUSTED; the pool has this many threads to
            spare for them.
        job_store: Where job records live: a SQLAlchemy URL
            (``sqlite:///path/jobs.db``, ``postgresql+psycopg://...``) or
            ``memory`` (lost on restart). Empty means SQLite in
            ``$XDG_STATE_HOME/dask-compute/jobs.db`` (``~/.local/state/...``).
        stored_result_bytes: Results up to this size (pickled) are stored with
            their record and survive a restart; 0 stores none.
        inline_result_bytes: Results up to this size come back inside Run and
            WaitJob answers; larger ones are read with GetJobResult (at most
            3 MiB, so that no answer nears gRPC's usual 4 MiB limit).
        result_chunk_bytes: Default chunk size of GetJobResult streams.
        object_ttl: Seconds an uploaded object is kept after its last use.
        max_object_bytes: The largest object PutObject accepts.
        metrics_port: Port of the Prometheus ``/metrics`` endpoint on ``host``;
            0 (the default) turns it off.
        replica_lease: With a shared job store (replicas), seconds a replica
            may go unseen before another takes over its unfinished jobs.
        max_argument_bytes: Most bytes of JSON arguments (``call.args`` and
            ``call.kwargs``, of all its jobs) in one request; past it the
            request is refused with INVALID_ARGUMENT before it is parsed.
        max_argument_values: Most JSON values (numbers, strings, lists, ...)
            in one job's arguments; past it INVALID_ARGUMENT.
        max_uploads_per_caller: Most PutObject uploads one caller may have in
            progress at once; past it RESOURCE_EXHAUSTED.
        max_upload_bytes_per_caller: Most bytes one caller's uploads in
            progress may hold in the server together (counted as they
            arrive); past it RESOURCE_EXHAUSTED.
        max_upload_bytes: Most bytes all callers' uploads in progress may
            hold in the server together (counted as they arrive); past it
            RESOURCE_EXHAUSTED. ``None`` means a quarter of the memory this
            process may use (see :attr:`upload_bytes_bound`).
        otlp_endpoint: Where to export traces with OTLP over gRPC
            (``http://collector:4317`` plaintext, ``https://...`` TLS). Empty
            leaves it to the standard ``OTEL_EXPORTER_OTLP_ENDPOINT`` and
            ``OTEL_TRACES_EXPORTER`` variables; with neither, nothing is
            traced (see :mod:`server.telemetry`).
    """

    host: str = "127.0.0.1"
    port: int = 50051
    scheduler_address: str = ""
    n_workers: int | None = None
    threads_per_worker: int | None = None
    processes: bool = True
    memory_limit: str = "auto"
    dashboard_address: str = ":8787"
    functions: tuple[str, ...] = ()
    default_scheduler: str = "distributed"
    local_threads: int | None = None
    local_processes: int | None = None
    result_ttl: float = 600.0
    job_ttl: float = 3600.0
    max_jobs: int = 100_000
    shutdown_grace: float = 25.0
    max_message_bytes: int = 64 * 1024 * 1024
    max_job_seconds: float = 0.0
    max_pending_jobs: int = 100_000
    max_jobs_per_caller: int = 10_000
    local_pool_share: float = 0.5
    max_abandoned_threads: int = 16
    tokens_file: str = ""
    tokens: str = dataclasses.field(default="", repr=False)
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    pickled_work: bool = True
    insecure_no_auth_on_network: bool = False
    allow_pickled_work_without_auth: bool = False
    job_store: str = ""
    stored_result_bytes: int = 1024 * 1024
    inline_result_bytes: int = 1024 * 1024
    result_chunk_bytes: int = 1024 * 1024
    object_ttl: float = 3600.0
    max_object_bytes: int = 4 * 1024**3
    metrics_port: int = 0
    replica_lease: float = 30.0
    max_argument_bytes: int = 4 * 1024 * 1024
    max_argument_values: int = 1_000_000
    max_uploads_per_caller: int = 4
    max_upload_bytes_per_caller: int = 4 * 1024**3
    max_upload_bytes: int | None = None
    otlp_endpoint: str = ""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise SettingsError(f"port must be 0..65535, got {self.port}")
        if not 0 <= self.metrics_port <= 65535:
            raise SettingsError(f"metrics_port must be 0..65535, got {self.metrics_port}")
        if self.object_ttl < 0 or self.max_object_bytes < 0:
            raise SettingsError("object_ttl and max_object_bytes must not be negative")
        for name in ("n_workers", "threads_per_worker", "local_threads", "local_processes"):
            value = getattr(self, name)
            if value is not None and value < (0 if name == "n_workers" else 1):
                raise SettingsError(f"{name} must be positive, got {value}")
        if self.default_scheduler not in SCHEDULERS:
            raise SettingsError(
                f"default_scheduler must be one of {', '.join(SCHEDULERS)}, "
                f"got {self.default_scheduler!r}"
            )
        for name in ("result_ttl", "job_ttl", "shutdown_grace", "max_job_seconds"):
            if getattr(self, name) < 0:
                raise SettingsError(f"{name} must not be negative")
        if self.replica_lease < 3:
            raise SettingsError(
                f"replica_lease must be at least 3 seconds (replicas renew it every "
                f"second), got {self.replica_lease}"
            )
        if not 0 < self.local_pool_share <= 1:
            raise SettingsError(
                f"local_pool_share must be above 0 and at most 1, got {self.local_pool_share}"
            )
        if not 1 <= self.max_abandoned_threads <= 1024:
            raise SettingsError(
                f"max_abandoned_threads must be 1 to 1024, got {self.max_abandoned_threads}"
            )
        for name in (
            "max_jobs",
            "max_pending_jobs",
            "max_jobs_per_caller",
            "max_argument_bytes",
            "max_argument_values",
            "max_uploads_per_caller",
            "max_upload_bytes_per_caller",
        ):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name} must be at least 1")
        if self.max_upload_bytes is not None and self.max_upload_bytes < 1:
            raise SettingsError("max_upload_bytes must be at least 1")
        if not 0 <= self.inline_result_bytes <= 3 * 1024 * 1024:
            raise SettingsError("inline_result_bytes must be between 0 and 3 MiB")
        if not 1024 <= self.result_chunk_bytes <= 3 * 1024 * 1024:
            raise SettingsError("result_chunk_bytes must be between 1 KiB and 3 MiB")
        if self.stored_result_bytes < 0:
            raise SettingsError("stored_result_bytes must not be negative")
        if self.job_store and self.job_store != "memory" and "://" not in self.job_store:
            raise SettingsError(
                f"job_store must be 'memory' or a database URL such as sqlite:///jobs.db, "
                f"got {self.job_store!r}"
            )
        if self.max_message_bytes < 4 * 1024 * 1024:
            raise SettingsError("max_message_bytes must be at least 4 MiB")
        if self.scheduler_address and self.n_workers is not None:
            raise SettingsError("n_workers only applies to a LocalCluster, not --scheduler-address")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise SettingsError("tls_cert and tls_key go together: give both or neither")
        if self.tls_client_ca and not self.tls_cert:
            raise SettingsError("tls_client_ca (mutual TLS) needs tls_cert and tls_key too")
        if self.otlp_endpoint and not self.otlp_endpoint.startswith(("http://", "https://")):
            raise SettingsError(
                f"otlp_endpoint must be http://HOST:PORT (plaintext) or https://HOST:PORT "
                f"(TLS), got {self.otlp_endpoint!r}"
            )
        if self.tokens_file and self.tokens:
            raise SettingsError(
                "give tokens in one place: tokens_file or DASK_COMPUTE_TOKENS, not both"
            )

    @property
    def job_store_url(self) -> str:
        """The job store URL, with the default filled in."""
        if self.job_store:
            return self.job_store
        state = os.environ.get("XDG_STATE_HOME") or os.path.join("~", ".local", "state")
        return f"sqlite:///{os.path.join(state, 'dask-compute', 'jobs.db')}"

    @property
    def pool_share(self) -> float:
        """The share of a local pool one caller may hold: ``local_pool_share`` when
        callers are told apart (credentials are configured), else all of it."""
        named = self.tokens_file or self.tokens or self.tls_client_ca
        return self.local_pool_share if named else 1.0

    @property
    def upload_bytes_bound(self) -> int:
        """Most bytes all uploads in progress may hold (default: a quarter of the
        memory this process may use, container limits honoured).

        An upload's bytes are held in the server until they are scattered to a
        worker, which then loads the object from them: the server shares the
        machine with its LocalCluster's workers (whose ``memory_limit=auto``
        divides all of it among them), so uploads take at most a quarter.
        """
        if self.max_upload_bytes is not None:
            return self.max_upload_bytes
        return max(1, _memory_limit() // 4)

    @property
    def local_threads_count(self) -> int:
        """Threads in the ``threads`` scheduler's pool (default: the CPUs this process may use)."""
        return self.local_threads or _cpu_count()

    @property
    def local_processes_count(self) -> int:
        """Processes in the ``processes`` scheduler's pool (default: the CPUs this process may use)."""
        return self.local_processes or _cpu_count()

    @classmethod
    def env_var(cls, field: str) -> str:
        """The environment variable of ``field``."""
        return ENV_PREFIX + field.upper()

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> Settings:
        """Build settings from ``DASK_COMPUTE_*`` variables, then ``overrides``.

        Args:
            environ: The environment to read (pass ``os.environ`` in production).
            **overrides: Values that win over the environment (CLI flags);
                ``None`` means "not given" and is skipped.

        Returns:
            The validated settings.

        Raises:
            SettingsError: A value cannot be parsed or is out of range.
        """
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            raw = environ.get(cls.env_var(field.name))
            if raw is None:
                continue
            if field.name == "port" and _SERVICE_LINK.match(raw.strip()):
                logger.warning(
                    "ignoring %s=%s: that is a Kubernetes service link, not a port "
                    "(set enableServiceLinks: false, or give the port as a number)",
                    cls.env_var(field.name),
                    raw,
                )
                continue
            try:
                values[field.name] = _PARSERS.get(field.name, _parse_by_type(field))(raw)
            except (ValueError, SettingsError) as exc:
                raise SettingsError(f"{cls.env_var(field.name)}={raw!r}: {exc}") from exc
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _parse_by_type(field: dataclasses.Field) -> Any:
    kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", "")
    if kind == "bool":
        return _parse_bool
    if kind == "int":
        return int
    if kind == "float":
        return float
    if kind == "int | None":
        return _parse_optional_int
    return str


_PARSERS = {"functions": _parse_list}
