"""Plain data the SDK returns: no protobuf types ever reach the caller."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import logging
from typing import Any

logger = logging.getLogger(__name__)

#: Scheduler names a job may ask for (``None`` means the server's default).
SCHEDULERS = ("distributed", "threads", "processes", "synchronous")


class JobState(str, enum.Enum):
    """Where a job is in its life."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """Whether the job has reached its final state."""
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


@dataclasses.dataclass(frozen=True)
class ObjectRef:
    """Data uploaded once with ``client.scatter`` and held on the service's cluster.

    Pass it wherever the data would go: as an argument of ``submit``, ``map``
    or a named function in ``run``, or inside Dask work. The server puts the
    data in its place; it is not uploaded again.

    Attributes:
        object_id: "sha256:" and the hash of the uploaded bytes.
        size: The size of those bytes.
    """

    object_id: str
    size: int


@dataclasses.dataclass(frozen=True)
class WorkerInfo:
    """One Dask worker.

    Attributes:
        address: The worker's address.
        name: The worker's name.
        nthreads: Threads that run tasks.
        memory_limit: Memory limit in bytes (0: none).
        memory: Memory in use at the last heartbeat, in bytes.
        tasks_in_flight: Unfinished tasks on the worker at the last heartbeat.
    """

    address: str
    name: str
    nthreads: int
    memory_limit: int
    memory: int
    tasks_in_flight: int


@dataclasses.dataclass(frozen=True)
class Versions:
    """Versions of the software on one side of the connection.

    Attributes:
        python: The Python version, e.g. "3.11.7".
        dask: The dask version.
        distributed: The distributed version.
        cloudpickle: The cloudpickle version.
        service: The service's version (server side only).
        grpcio: The grpcio version (server side only).
        protobuf: The protobuf runtime version (server side only).
    """

    python: str
    dask: str
    distributed: str
    cloudpickle: str
    service: str = ""
    grpcio: str = ""
    protobuf: str = ""


@dataclasses.dataclass(frozen=True)
class ClusterInfo:
    """The Dask cluster behind the service.

    Attributes:
        scheduler_address: The Dask scheduler's address.
        dashboard_link: The Dask dashboard ("" when off).
        worker_type: "processes", "threads" or "" when unknown.
        n_workers: Number of workers.
        total_threads: Worker threads in all.
        total_memory: Workers' memory limits in all, in bytes.
        workers: The workers, sorted by address.
        n_workers_wanted: The size the server keeps its own cluster at; 0 on an
            existing cluster. Fewer ``n_workers``: lost workers are coming back.
        versions: The server's software versions (``None`` in a Run snapshot).
        schedulers: Schedulers jobs may name.
        default_scheduler: Scheduler of jobs that name none.
        caller: The name the server knows this client by: the owner of the
            jobs it submits ("" in a Run snapshot).
    """

    scheduler_address: str
    dashboard_link: str
    worker_type: str
    n_workers: int
    total_threads: int
    total_memory: int
    workers: tuple[WorkerInfo, ...] = ()
    n_workers_wanted: int = 0
    versions: Versions | None = None
    schedulers: tuple[str, ...] = ()
    default_scheduler: str = ""
    caller: str = ""


@dataclasses.dataclass(frozen=True)
class Parameter:
    """A parameter of a named function.

    Attributes:
        name: Its name.
        type: Its JSON type ("integer", "number|null", ...).
        required: Whether callers must give it.
        default: Its default, when not required.
        keyword_only: Whether it can only be given by keyword.
    """

    name: str
    type: str
    required: bool
    default: Any = None
    keyword_only: bool = False


@dataclasses.dataclass(frozen=True)
class FunctionInfo:
    """A named function the service offers.

    Attributes:
        name: The name to call it by.
        description: What it does, from its docstring.
        parameters: Its parameters, in order.
        returns: The JSON type of its result.
        signature: Its signature as text, e.g. "add(a: number, b: number) -> number".
    """

    name: str
    description: str
    parameters: tuple[Parameter, ...]
    returns: str
    signature: str


@dataclasses.dataclass(frozen=True)
class JobError:
    """Why a job failed, as the server described it.

    Attributes:
        type: The exception's qualified type, e.g. "builtins.ValueError".
        message: Its message.
        traceback: The remote traceback as text.
        pickled_exception: The exception, cloudpickled ("" when it could not be).
    """

    type: str
    message: str
    traceback: str
    pickled_exception: bytes = dataclasses.field(default=b"", repr=False)


@dataclasses.dataclass(frozen=True)
class JobInfo:
    """A job's record.

    Attributes:
        job_id: The job's id.
        state: Where it is in its life.
        scheduler: The scheduler that runs it.
        kind: "function", "pickled_call" or "graph".
        target: What it runs (function name, callable's qualified name, "graph").
        name: The caller's label.
        submitted: When the server accepted it (UTC).
        started: When it started, or ``None``.
        finished: When it finished, or ``None``.
        error: Why it failed, or ``None``.
        cancel_reason: Why it was cancelled ("" otherwise).
        result_available: Whether its result can still be read.
        owner: The caller that submitted it ("" when the server does not say).
        depends_on: The jobs whose results it uses as inputs. It stays
            ``QUEUED`` until they have all finished, and fails without running
            (error type ``UpstreamFailed``) if one of them did not succeed.
    """

    job_id: str
    state: JobState
    scheduler: str
    kind: str
    target: str
    name: str
    submitted: datetime.datetime | None
    started: datetime.datetime | None
    finished: datetime.datetime | None
    error: JobError | None
    cancel_reason: str
    result_available: bool
    owner: str = ""
    depends_on: tuple[str, ...] = ()

    @property
    def duration(self) -> float | None:
        """Seconds from start to finish, once finished."""
        if self.started is None or self.finished is None:
            return None
        return (self.finished - self.started).total_seconds()


@dataclasses.dataclass(frozen=True)
class Progress:
    """How far a job's Dask tasks are, as its scheduler reports them (never an estimate).

    Attributes:
        tasks_done: Tasks finished.
        tasks_total: Tasks in all; 0 while not yet known.
    """

    tasks_done: int
    tasks_total: int

    @property
    def fraction(self) -> float | None:
        """Done out of total, 0.0 to 1.0; ``None`` while the total is not known."""
        if self.tasks_total <= 0:
            return None
        return min(1.0, self.tasks_done / self.tasks_total)


@dataclasses.dataclass(frozen=True)
class JobUpdate:
    """One report while watching a job: its record and its progress as they are now.

    Attributes:
        job: The job's record.
        progress: Its tasks done out of total.
    """

    job: JobInfo
    progress: Progress
