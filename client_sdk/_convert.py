"""All conversions between protobuf messages and the SDK's plain types."""

from __future__ import annotations

import datetime
import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from google.protobuf import json_format, timestamp_pb2

from client_sdk import _pickle
from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk.errors import (
    InvalidArguments,
    JobCancelled,
    JobFailed,
    StatusCode,
    UntrustedResult,
)
from client_sdk.types import (
    SCHEDULERS,
    ClusterInfo,
    FunctionInfo,
    JobError,
    JobInfo,
    JobState,
    JobUpdate,
    ObjectRef,
    Parameter,
    Progress,
    Versions,
    WorkerInfo,
)

if TYPE_CHECKING:
    from client_sdk.job import JobBase

logger = logging.getLogger(__name__)

SCHEDULER_ENUMS = {
    None: pb.SCHEDULER_UNSPECIFIED,
    "distributed": pb.SCHEDULER_DISTRIBUTED,
    "threads": pb.SCHEDULER_THREADS,
    "processes": pb.SCHEDULER_PROCESSES,
    "synchronous": pb.SCHEDULER_SYNCHRONOUS,
    "sync": pb.SCHEDULER_SYNCHRONOUS,  # dask's own alias
    "single-threaded": pb.SCHEDULER_SYNCHRONOUS,
}
SCHEDULER_NAMES = {
    pb.SCHEDULER_UNSPECIFIED: "",
    pb.SCHEDULER_DISTRIBUTED: "distributed",
    pb.SCHEDULER_THREADS: "threads",
    pb.SCHEDULER_PROCESSES: "processes",
    pb.SCHEDULER_SYNCHRONOUS: "synchronous",
}
FORMAT_ENUMS = {
    "auto": pb.RESULT_FORMAT_UNSPECIFIED,
    "json": pb.RESULT_FORMAT_JSON,
    "pickle": pb.RESULT_FORMAT_PICKLE,
}
STATE_NAMES = {
    pb.JOB_STATE_QUEUED: JobState.QUEUED,
    pb.JOB_STATE_RUNNING: JobState.RUNNING,
    pb.JOB_STATE_SUCCEEDED: JobState.SUCCEEDED,
    pb.JOB_STATE_FAILED: JobState.FAILED,
    pb.JOB_STATE_CANCELLED: JobState.CANCELLED,
}
STATE_ENUMS = {state: number for number, state in STATE_NAMES.items()}
KIND_NAMES = {
    pb.JOB_KIND_FUNCTION: "function",
    pb.JOB_KIND_PICKLED_CALL: "pickled_call",
    pb.JOB_KIND_GRAPH: "graph",
}
WORKER_TYPES = {
    pb.WORKER_TYPE_PROCESSES: "processes",
    pb.WORKER_TYPE_THREADS: "threads",
    pb.WORKER_TYPE_UNSPECIFIED: "",
}


def scheduler(name: str | None) -> pb.Scheduler:
    """The ``Scheduler`` enum of a scheduler name (``None``: the server's default)."""
    try:
        return SCHEDULER_ENUMS[name]
    except KeyError:
        raise ValueError(
            f"unknown scheduler {name!r}; use one of {', '.join(SCHEDULERS)}"
        ) from None


def result_format(name: str) -> pb.ResultFormat:
    """The ``ResultFormat`` enum of "auto", "json" or "pickle"."""
    try:
        return FORMAT_ENUMS[name]
    except KeyError:
        raise ValueError(f"unknown result format {name!r}; use auto, json or pickle") from None


def job_options(
    spec: pb.JobSpec, name: str | None, timeout: float | None, retryable: bool = False
) -> pb.JobSpec:
    """Set a job's label, time limit and retry policy on ``spec``; returns ``spec``.

    Raises:
        ValueError: A name over 256 characters, or a time limit that is not a
            positive number of seconds.
    """
    if name:
        if len(name) > 256:
            raise ValueError(f"a job name is at most 256 characters, got {len(name)}")
        spec.name = name
    if timeout is not None:
        if not timeout > 0:
            raise ValueError(f"a job's time limit must be positive seconds, got {timeout!r}")
        spec.timeout.FromNanoseconds(int(timeout * 1e9))
    spec.retryable = bool(retryable)
    return spec


def request_id() -> str:
    """A fresh idempotency key: the server runs a retried submission carrying it only once."""
    return uuid.uuid4().hex


def function_call_spec(
    name: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    scheduler_name: str | None,
    fmt: str = "pickle",
) -> pb.JobSpec:
    """A ``JobSpec`` calling a named function with JSON arguments."""
    spec = pb.JobSpec(
        scheduler=scheduler(scheduler_name),
        result_format=result_format(fmt),
        request_id=request_id(),
    )
    spec.call.function = name
    try:
        spec.call.args.extend([_object_markers(a) for a in args])
        spec.call.kwargs.update({k: _object_markers(v) for k, v in kwargs.items()})
    except (ValueError, TypeError) as exc:
        raise InvalidArguments(
            StatusCode.INVALID_ARGUMENT,
            f"arguments of named function {name!r} must be JSON values: {exc}; "
            "use submit() to send Python objects",
        ) from exc
    return spec


def _object_markers(value: Any) -> Any:
    """JSON arguments with each :class:`ObjectRef` as the server's ``{"$object": id}``
    and each job as ``{"$job": id}`` (its result, on the server)."""
    if isinstance(value, ObjectRef):
        return {"$object": value.object_id}
    if isinstance(value, _job_type()):
        return {"$job": value.job_id}
    if isinstance(value, (list, tuple)):
        return [_object_markers(v) for v in value]
    if isinstance(value, dict):
        return {k: _object_markers(v) for k, v in value.items()}
    return value


def _job_type() -> type[JobBase]:
    # Imported here: client_sdk.job imports this module.
    from client_sdk.job import JobBase

    return JobBase


def pickled_call_spec(
    func: Any,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    scheduler_name: str | None,
) -> pb.JobSpec:
    """A ``JobSpec`` carrying a cloudpickled call (jobs in it stand for their results)."""
    payload = _pickle.dump_call(func, args, kwargs)
    work = pb.PickledCall(
        payload=payload.data,
        serializer=pb.SERIALIZER_CLOUDPICKLE,
        object_ids=payload.object_ids,
        job_ids=payload.job_ids,
    )
    return _pickled_spec(scheduler_name, pickled_call=work)


def graph_spec(obj: Any, scheduler_name: str | None) -> pb.JobSpec:
    """A ``JobSpec`` carrying a cloudpickled Dask collection or graph."""
    payload = _pickle.dump_graph(obj)
    work = pb.DaskGraph(
        payload=payload.data,
        serializer=pb.SERIALIZER_CLOUDPICKLE,
        object_ids=payload.object_ids,
        job_ids=payload.job_ids,
    )
    return _pickled_spec(scheduler_name, graph=work)


def _pickled_spec(scheduler_name: str | None, **work: Any) -> pb.JobSpec:
    # Pickled work always asks for a pickled result, and always carries a fresh
    # request_id, so gRPC's retries never run it twice.
    return pb.JobSpec(
        scheduler=scheduler(scheduler_name),
        result_format=pb.RESULT_FORMAT_PICKLE,
        request_id=request_id(),
        **work,
    )


def _time(message: timestamp_pb2.Timestamp, present: bool) -> datetime.datetime | None:
    if not present:
        return None
    return message.ToDatetime(tzinfo=datetime.timezone.utc)


def job_info(message: pb.Job) -> JobInfo:
    """A :class:`JobInfo` from a ``Job`` message."""
    error = None
    if message.HasField("error"):
        error = JobError(
            type=message.error.type,
            message=message.error.message,
            traceback=message.error.traceback,
            pickled_exception=message.error.pickled_exception,
        )
    return JobInfo(
        job_id=message.job_id,
        state=STATE_NAMES.get(message.state, JobState.QUEUED),
        scheduler=SCHEDULER_NAMES.get(message.scheduler, ""),
        kind=KIND_NAMES.get(message.kind, ""),
        target=message.target,
        name=message.name,
        submitted=_time(message.submit_time, message.HasField("submit_time")),
        started=_time(message.start_time, message.HasField("start_time")),
        finished=_time(message.finish_time, message.HasField("finish_time")),
        error=error,
        cancel_reason=message.cancel_reason,
        result_available=message.result_available,
        owner=message.owner,
        depends_on=tuple(message.depends_on),
    )


def value(message: pb.Result) -> Any:
    """The Python value of a ``Result`` message."""
    kind = message.WhichOneof("value")
    if kind == "json":
        return json_format.MessageToDict(message.json) if message.json.WhichOneof("kind") else None
    if kind == "pickle":
        return _pickle.loads(message.pickle)
    return None


def resolve(
    job: JobInfo, result: pb.Result | None, *, trusted: bool
) -> tuple[Any, BaseException | None]:
    """``(value, None)`` for a succeeded job, ``(None, exception)`` otherwise.

    Pickles (a result, an exception) are loaded only when ``trusted``.

    Raises:
        UntrustedResult: The result is a pickle and ``trusted`` is false.
        Exception: The result could not be loaded here (for example, its
            type's module is not installed on this side).
    """
    if job.state is JobState.SUCCEEDED:
        if result is not None and result.WhichOneof("value") == "pickle" and not trusted:
            raise UntrustedResult(job.job_id, job.owner)
        return (value(result) if result is not None else None), None
    return None, job_exception(job, trusted=trusted)


def job_exception(job: JobInfo, *, trusted: bool) -> BaseException:
    """The exception a failed or cancelled job stands for.

    The remote exception itself when ``trusted`` and it can be rebuilt here,
    with the remote traceback added as a note; else :class:`JobFailed`
    (type, message and traceback text: no pickle is loaded).
    """
    if job.state is JobState.CANCELLED:
        return JobCancelled(f"job {job.job_id} was cancelled: {job.cancel_reason}")
    error = job.error or JobError("builtins.Exception", "the job failed", "")
    exc = _pickle.load_exception(error.pickled_exception) if trusted else None
    if exc is None:
        return JobFailed(error.type, error.message, error.traceback)
    if error.traceback and hasattr(exc, "add_note"):  # Python 3.11+
        exc.add_note(f"Remote traceback of job {job.job_id}:\n{error.traceback.rstrip()}")
    return exc


def job_update(message: pb.WatchJobResponse) -> JobUpdate:
    """A :class:`JobUpdate` from a ``WatchJobResponse`` message."""
    progress = Progress(message.progress.tasks_done, message.progress.tasks_total)
    return JobUpdate(job_info(message.job), progress)


def wait_request(job_id: str, timeout: float | None) -> pb.WaitJobRequest:
    """A ``WaitJobRequest`` that waits at most ``timeout`` seconds (``None``: no limit)."""
    request = pb.WaitJobRequest(job_id=job_id)
    if timeout is not None:
        request.timeout.FromNanoseconds(max(1, int(timeout * 1e9)))
    return request


def cluster_info(message: pb.ClusterInfo, response: Any = None) -> ClusterInfo:
    """A :class:`ClusterInfo`; ``response`` (a GetClusterInfoResponse) adds versions."""
    extra: dict[str, Any] = {}
    if response is not None:
        extra = {
            "versions": versions(response.versions),
            "schedulers": tuple(
                SCHEDULER_NAMES[s] for s in response.schedulers if s in SCHEDULER_NAMES
            ),
            "default_scheduler": SCHEDULER_NAMES.get(response.default_scheduler, ""),
            "caller": response.caller,
        }
    return ClusterInfo(
        scheduler_address=message.scheduler_address,
        dashboard_link=message.dashboard_link,
        worker_type=WORKER_TYPES.get(message.worker_type, ""),
        n_workers=message.n_workers,
        total_threads=message.total_threads,
        total_memory=message.total_memory_bytes,
        n_workers_wanted=message.n_workers_wanted,
        workers=tuple(
            WorkerInfo(
                address=w.address,
                name=w.name,
                nthreads=w.nthreads,
                memory_limit=w.memory_limit_bytes,
                memory=w.memory_bytes,
                tasks_in_flight=w.tasks_in_flight,
            )
            for w in message.workers
        ),
        **extra,
    )


def versions(message: pb.Versions) -> Versions:
    """A :class:`Versions`."""
    return Versions(
        python=message.python,
        dask=message.dask,
        distributed=message.distributed,
        cloudpickle=message.cloudpickle,
        service=message.service,
        grpcio=message.grpcio,
        protobuf=message.protobuf,
    )


def function_info(message: pb.Function) -> FunctionInfo:
    """A :class:`FunctionInfo`."""
    return FunctionInfo(
        name=message.name,
        description=message.description,
        parameters=tuple(
            Parameter(
                name=p.name,
                type=p.type,
                required=p.required,
                default=json_format.MessageToDict(p.default) if p.HasField("default") else None,
                keyword_only=p.keyword_only,
            )
            for p in message.parameters
        ),
        returns=message.returns,
        signature=message.signature,
    )


def job_states(states: Sequence[JobState | str]) -> list[pb.JobState]:
    """``JobState`` enums from states or their names."""
    return [STATE_ENUMS[JobState(s)] for s in states]
