"""Translation between protobuf messages and the core's plain Python objects.

JSON arguments are bounded: :func:`job_request` counts the values of a call's
``args`` and ``kwargs`` and refuses more than ``max_values`` with
INVALID_ARGUMENT; :func:`argument_bytes` says how big they are, so that the
servicer converts large ones on a thread rather than on the event loop.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf import json_format, struct_pb2

from client_sdk._proto.compute.v1 import compute_pb2 as pb
from server.core import ClusterSnapshot, JobRequest
from server.errors import InvalidArgument
from server.jobs import JobError, JobKind, JobRecord, JobState
from server.objects import StoredObject
from server.registry import FunctionSpec
from server.results import EncodedResult, ResultStream
from server.worker_stream import WorkerStream

SCHEDULER_NAMES = {
    pb.SCHEDULER_UNSPECIFIED: "",
    pb.SCHEDULER_DISTRIBUTED: "distributed",
    pb.SCHEDULER_THREADS: "threads",
    pb.SCHEDULER_PROCESSES: "processes",
    pb.SCHEDULER_SYNCHRONOUS: "synchronous",
}
SCHEDULER_ENUMS = {name: number for number, name in SCHEDULER_NAMES.items() if name}

FORMAT_NAMES = {
    pb.RESULT_FORMAT_UNSPECIFIED: "auto",
    pb.RESULT_FORMAT_JSON: "json",
    pb.RESULT_FORMAT_PICKLE: "pickle",
    pb.RESULT_FORMAT_ARROW: "arrow",
}
FORMAT_ENUMS = {name: number for number, name in FORMAT_NAMES.items()}

STATE_ENUMS = {
    JobState.QUEUED: pb.JOB_STATE_QUEUED,
    JobState.RUNNING: pb.JOB_STATE_RUNNING,
    JobState.SUCCEEDED: pb.JOB_STATE_SUCCEEDED,
    JobState.FAILED: pb.JOB_STATE_FAILED,
    JobState.CANCELLED: pb.JOB_STATE_CANCELLED,
}
STATE_NAMES = {number: state for state, number in STATE_ENUMS.items()}

KIND_ENUMS = {
    JobKind.FUNCTION: pb.JOB_KIND_FUNCTION,
    JobKind.PICKLED_CALL: pb.JOB_KIND_PICKLED_CALL,
    JobKind.GRAPH: pb.JOB_KIND_GRAPH,
}

WORKER_TYPES = {
    "processes": pb.WORKER_TYPE_PROCESSES,
    "threads": pb.WORKER_TYPE_THREADS,
    "": pb.WORKER_TYPE_UNSPECIFIED,
}

_SERIALIZERS = (pb.SERIALIZER_UNSPECIFIED, pb.SERIALIZER_CLOUDPICKLE)


def _enum(table: dict, number: int, what: str, enum_type: Any) -> Any:
    try:
        return table[number]
    except KeyError:
        known = ", ".join(enum_type.Name(n) for n in table)
        raise InvalidArgument(
            f"{what} {number} is not one of {known}", field=what, reason="UNKNOWN_ENUM_VALUE"
        ) from None


def result_format(number: int) -> str:
    """The core's name of a ``ResultFormat``."""
    return _enum(FORMAT_NAMES, number, "result_format", pb.ResultFormat)


#: Above this many bytes of JSON arguments, the servicer converts them on a thread.
LARGE_ARGUMENT_BYTES = 64 * 1024


def argument_bytes(spec: pb.JobSpec) -> int:
    """Encoded bytes of a job's JSON arguments (0 for work that is not a call)."""
    if spec.WhichOneof("work") != "call":
        return 0
    call = spec.call
    return call.args.ByteSize() + call.kwargs.ByteSize()


def count_values(value: Any, limit: int) -> int:
    """JSON values in a decoded ``value`` (its containers' items, all the way down);
    counting stops once past ``limit``."""
    count = 0
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            items: Any = item.values()
        elif isinstance(item, list):
            items = item
        else:
            continue
        count += len(items)
        if count > limit:
            return count
        pending.extend(i for i in items if isinstance(i, (dict, list)))
    return count


def _json(message: Any, what: str, budget: list[int] | None = None) -> Any:
    """Plain JSON values of a ListValue or Struct.

    ``budget`` holds the values the job's arguments may still have, and is
    charged with this message's.
    """
    if not message.ListFields():  # empty: skip json_format's walk of the message
        return [] if message.DESCRIPTOR.full_name == "google.protobuf.ListValue" else {}
    try:
        value = json_format.MessageToDict(message)
    except ValueError as exc:  # NaN and Infinity have no JSON form
        raise InvalidArgument(
            f"{what} is not valid JSON: {exc}", field=what, reason="INVALID_JSON"
        ) from exc
    if budget is not None:
        count = count_values(value, budget[0])
        if count > budget[0]:
            raise InvalidArgument(
                f"the arguments hold more than {budget[1]:,} JSON values; the server accepts "
                f"at most {budget[1]:,} a job (--max-argument-values): pass large data as an "
                f"object (PutObject) and refer to it instead",
                field=what,
                reason="ARGUMENT_VALUES_LIMIT",
                metadata={"limit_name": "max_argument_values", "limit": budget[1]},
            )
        budget[0] -= count
    return value


def timeout(duration: Any) -> float | None:
    """Seconds from a ``Duration``; zero means no timeout (``None``)."""
    seconds = duration.seconds + duration.nanos / 1e9
    if seconds < 0:
        raise InvalidArgument(
            "timeout must not be negative", field="timeout", reason="NEGATIVE_TIMEOUT"
        )
    return seconds or None


def job_request(spec: pb.JobSpec, max_values: int | None = None) -> JobRequest:
    """The core's :class:`JobRequest` from a ``JobSpec``.

    ``max_values``: most JSON values in the call's arguments (``None``: no bound).

    Raises:
        InvalidArgument: A field the core cannot take, or too many values.
    """
    scheduler = _enum(SCHEDULER_NAMES, spec.scheduler, "scheduler", pb.Scheduler)
    fmt = result_format(spec.result_format)
    common = {
        "scheduler": scheduler,
        "result_format": fmt,
        "name": spec.name,
        "request_id": spec.request_id,
        "retryable": spec.retryable,
        "timeout": timeout(spec.timeout) if spec.HasField("timeout") else None,
    }
    work = spec.WhichOneof("work")
    if work == "call":
        if not spec.call.function:
            raise InvalidArgument(
                "call.function is required: name a function from ListFunctions",
                field="call.function",
                reason="FUNCTION_REQUIRED",
            )
        call = spec.call
        budget = None if max_values is None else [max_values, max_values]
        return JobRequest(
            kind=JobKind.FUNCTION,
            function=call.function,
            args=_json(call.args, "call.args", budget) if call.HasField("args") else [],
            kwargs=_json(call.kwargs, "call.kwargs", budget) if call.HasField("kwargs") else {},
            **common,
        )
    if work in ("pickled_call", "graph"):
        message = getattr(spec, work)
        if message.serializer not in _SERIALIZERS:
            raise InvalidArgument(
                f"{work}.serializer {message.serializer} is not supported",
                field=f"{work}.serializer",
                reason="UNSUPPORTED_SERIALIZER",
            )
        kind = JobKind.PICKLED_CALL if work == "pickled_call" else JobKind.GRAPH
        return JobRequest(
            kind=kind,
            payload=message.payload,
            object_ids=tuple(message.object_ids),
            job_ids=tuple(message.job_ids),
            **common,
        )
    raise InvalidArgument(
        "job has no work: set one of call, pickled_call or graph", field="work", reason="NO_WORK"
    )


def states(numbers: Iterable[int]) -> list[JobState]:
    """Job states from a ListJobs filter (UNSPECIFIED is ignored)."""
    out = []
    for number in numbers:
        if number == pb.JOB_STATE_UNSPECIFIED:
            continue
        out.append(_enum(STATE_NAMES, number, "state", pb.JobState))
    return out


def _timestamp(message: Any, seconds: float | None) -> None:
    if seconds is not None:
        message.FromNanoseconds(int(seconds * 1e9))


def job(record: JobRecord) -> pb.Job:
    """A ``Job`` message from a record."""
    message = pb.Job(
        job_id=record.job_id,
        state=STATE_ENUMS[record.state],
        scheduler=SCHEDULER_ENUMS[record.scheduler],
        kind=KIND_ENUMS[record.kind],
        target=record.target,
        name=record.name,
        cancel_reason=record.cancel_reason,
        result_available=record.result_available,
        owner=record.owner,
        request_id=record.request_id,
        depends_on=record.depends_on,
    )
    _timestamp(message.submit_time, record.submit_time)
    _timestamp(message.start_time, record.start_time)
    _timestamp(message.finish_time, record.finish_time)
    if record.error is not None:
        message.error.CopyFrom(job_error(record.error))
    return message


def job_error(error: JobError) -> pb.JobError:
    """A ``JobError`` message."""
    return pb.JobError(
        type=error.type,
        message=error.message,
        traceback=error.traceback,
        pickled_exception=error.pickled_exception,
    )


def result(encoded: EncodedResult) -> pb.Result:
    """A ``Result`` message."""
    if encoded.streamed:
        return pb.Result(
            format=FORMAT_ENUMS[encoded.format], size_bytes=encoded.size_bytes, streamed=True
        )
    if encoded.format == "arrow":
        return pb.Result(
            arrow=encoded.arrow, format=pb.RESULT_FORMAT_ARROW, size_bytes=encoded.size_bytes
        )
    if encoded.format == "json":
        value = struct_pb2.Value()
        json_format.ParseDict(encoded.json, value)
        return pb.Result(json=value, format=pb.RESULT_FORMAT_JSON, size_bytes=encoded.size_bytes)
    return pb.Result(
        pickle=encoded.pickle,
        format=pb.RESULT_FORMAT_PICKLE,
        serializer=pb.SERIALIZER_CLOUDPICKLE,
        size_bytes=encoded.size_bytes,
    )


def result_header(stream: ResultStream | WorkerStream, offset: int) -> pb.ResultHeader:
    """The ``ResultHeader`` of a result stream."""
    return pb.ResultHeader(
        format=FORMAT_ENUMS[stream.format],
        serializer=pb.SERIALIZER_CLOUDPICKLE
        if stream.format == "pickle"
        else pb.SERIALIZER_UNSPECIFIED,
        total_size=stream.total_size,
        sha256=stream.sha256,
        segment_sizes=stream.segment_sizes,
        offset=offset,
    )


def object_ref(stored: StoredObject) -> pb.ObjectRef:
    """An ``ObjectRef`` message."""
    return pb.ObjectRef(object_id=stored.object_id, size_bytes=stored.size)


def cluster(snapshot: ClusterSnapshot | None) -> pb.ClusterInfo:
    """A ``ClusterInfo`` message (empty when there is no snapshot yet).

    The message of the latest snapshot is built once and shared: copy it
    into a response (a constructor argument or ``CopyFrom``), never change it.
    """
    if snapshot is None:
        return pb.ClusterInfo()
    last = _last_cluster
    if last[0] is snapshot:
        return last[1]
    message = _cluster(snapshot)
    _last_cluster[:] = [snapshot, message]
    return message


_last_cluster: list[Any] = [None, None]


def _cluster(snapshot: ClusterSnapshot) -> pb.ClusterInfo:
    return pb.ClusterInfo(
        scheduler_address=snapshot.scheduler_address,
        dashboard_link=snapshot.dashboard_link,
        worker_type=WORKER_TYPES[snapshot.worker_type],
        n_workers=snapshot.n_workers,
        total_threads=snapshot.total_threads,
        total_memory_bytes=snapshot.total_memory,
        n_workers_wanted=snapshot.n_workers_wanted,
        workers=[
            pb.WorkerInfo(
                address=w.address,
                name=w.name,
                nthreads=w.nthreads,
                memory_limit_bytes=w.memory_limit,
                memory_bytes=w.memory,
                tasks_in_flight=w.tasks_in_flight,
            )
            for w in snapshot.workers
        ],
    )


def versions(values: dict[str, str]) -> pb.Versions:
    """A ``Versions`` message, with this process's grpcio and protobuf added."""
    import google.protobuf
    import grpc

    return pb.Versions(grpcio=grpc.__version__, protobuf=google.protobuf.__version__, **values)


def function(spec: FunctionSpec) -> pb.Function:
    """A ``Function`` message describing a named function."""
    params = []
    for p in spec.parameters:
        param = pb.Parameter(
            name=p.name, type=p.json_type, required=p.required, keyword_only=p.keyword_only
        )
        if not p.required:
            try:
                json_format.ParseDict(p.default, param.default)
            except (json_format.ParseError, TypeError, ValueError):
                param.ClearField("default")  # a default with no JSON form is left out
        params.append(param)
    return pb.Function(
        name=spec.name,
        description=spec.description,
        parameters=params,
        returns=spec.returns,
        signature=spec.signature,
    )
