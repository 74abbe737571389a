import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Scheduler(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCHEDULER_UNSPECIFIED: _ClassVar[Scheduler]
    SCHEDULER_DISTRIBUTED: _ClassVar[Scheduler]
    SCHEDULER_THREADS: _ClassVar[Scheduler]
    SCHEDULER_PROCESSES: _ClassVar[Scheduler]
    SCHEDULER_SYNCHRONOUS: _ClassVar[Scheduler]

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]

class JobKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_KIND_UNSPECIFIED: _ClassVar[JobKind]
    JOB_KIND_FUNCTION: _ClassVar[JobKind]
    JOB_KIND_PICKLED_CALL: _ClassVar[JobKind]
    JOB_KIND_GRAPH: _ClassVar[JobKind]

class Serializer(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SERIALIZER_UNSPECIFIED: _ClassVar[Serializer]
    SERIALIZER_CLOUDPICKLE: _ClassVar[Serializer]

class ResultFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESULT_FORMAT_UNSPECIFIED: _ClassVar[ResultFormat]
    RESULT_FORMAT_JSON: _ClassVar[ResultFormat]
    RESULT_FORMAT_PICKLE: _ClassVar[ResultFormat]
    RESULT_FORMAT_ARROW: _ClassVar[ResultFormat]

class WorkerType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WORKER_TYPE_UNSPECIFIED: _ClassVar[WorkerType]
    WORKER_TYPE_PROCESSES: _ClassVar[WorkerType]
    WORKER_TYPE_THREADS: _ClassVar[WorkerType]
SCHEDULER_UNSPECIFIED: Scheduler
SCHEDULER_DISTRIBUTED: Scheduler
SCHEDULER_THREADS: Scheduler
SCHEDULER_PROCESSES: Scheduler
SCHEDULER_SYNCHRONOUS: Scheduler
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState
JOB_KIND_UNSPECIFIED: JobKind
JOB_KIND_FUNCTION: JobKind
JOB_KIND_PICKLED_CALL: JobKind
JOB_KIND_GRAPH: JobKind
SERIALIZER_UNSPECIFIED: Serializer
SERIALIZER_CLOUDPICKLE: Serializer
RESULT_FORMAT_UNSPECIFIED: ResultFormat
RESULT_FORMAT_JSON: ResultFormat
RESULT_FORMAT_PICKLE: ResultFormat
RESULT_FORMAT_ARROW: ResultFormat
WORKER_TYPE_UNSPECIFIED: WorkerType
WORKER_TYPE_PROCESSES: WorkerType
WORKER_TYPE_THREADS: WorkerType

class FunctionCall(_message.Message):
    __slots__ = ("function", "args", "kwargs")
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    KWARGS_FIELD_NUMBER: _ClassVar[int]
    function: str
    args: _struct_pb2.ListValue
    kwargs: _struct_pb2.Struct
    def __init__(self, function: _Optional[str] = ..., args: _Optional[_Union[_struct_pb2.ListValue, _Mapping]] = ..., kwargs: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class PickledCall(_message.Message):
    __slots__ = ("payload", "serializer", "object_ids", "job_ids")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    SERIALIZER_FIELD_NUMBER: _ClassVar[int]
    OBJECT_IDS_FIELD_NUMBER: _ClassVar[int]
    JOB_IDS_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    serializer: Serializer
    object_ids: _containers.RepeatedScalarFieldContainer[str]
    job_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, payload: _Optional[bytes] = ..., serializer: _Optional[_Union[Serializer, str]] = ..., object_ids: _Optional[_Iterable[str]] = ..., job_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class DaskGraph(_message.Message):
    __slots__ = ("payload", "serializer", "object_ids", "job_ids")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    SERIALIZER_FIELD_NUMBER: _ClassVar[int]
    OBJECT_IDS_FIELD_NUMBER: _ClassVar[int]
    JOB_IDS_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    serializer: Serializer
    object_ids: _containers.RepeatedScalarFieldContainer[str]
    job_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, payload: _Optional[bytes] = ..., serializer: _Optional[_Union[Serializer, str]] = ..., object_ids: _Optional[_Iterable[str]] = ..., job_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class JobSpec(_message.Message):
    __slots__ = ("call", "pickled_call", "graph", "scheduler", "result_format", "name", "request_id", "retryable", "timeout")
    CALL_FIELD_NUMBER: _ClassVar[int]
    PICKLED_CALL_FIELD_NUMBER: _ClassVar[int]
    GRAPH_FIELD_NUMBER: _ClassVar[int]
    SCHEDULER_FIELD_NUMBER: _ClassVar[int]
    RESULT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    call: FunctionCall
    pickled_call: PickledCall
    graph: DaskGraph
    scheduler: Scheduler
    result_format: ResultFormat
    name: str
    request_id: str
    retryable: bool
    timeout: _duration_pb2.Duration
    def __init__(self, call: _Optional[_Union[FunctionCall, _Mapping]] = ..., pickled_call: _Optional[_Union[PickledCall, _Mapping]] = ..., graph: _Optional[_Union[DaskGraph, _Mapping]] = ..., scheduler: _Optional[_Union[Scheduler, str]] = ..., result_format: _Optional[_Union[ResultFormat, str]] = ..., name: _Optional[str] = ..., request_id: _Optional[str] = ..., retryable: _Optional[bool] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class JobError(_message.Message):
    __slots__ = ("type", "message", "traceback", "pickled_exception")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TRACEBACK_FIELD_NUMBER: _ClassVar[int]
    PICKLED_EXCEPTION_FIELD_NUMBER: _ClassVar[int]
    type: str
    message: str
    traceback: str
    pickled_exception: bytes
    def __init__(self, type: _Optional[str] = ..., message: _Optional[str] = ..., traceback: _Optional[str] = ..., pickled_exception: _Optional[bytes] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("job_id", "state", "scheduler", "kind", "target", "name", "submit_time", "start_time", "finish_time", "error", "cancel_reason", "result_available", "owner", "request_id", "depends_on")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SCHEDULER_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SUBMIT_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    FINISH_TIME_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REASON_FIELD_NUMBER: _ClassVar[int]
    RESULT_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DEPENDS_ON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    state: JobState
    scheduler: Scheduler
    kind: JobKind
    target: str
    name: str
    submit_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    finish_time: _timestamp_pb2.Timestamp
    error: JobError
    cancel_reason: str
    result_available: bool
    owner: str
    request_id: str
    depends_on: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, job_id: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., scheduler: _Optional[_Union[Scheduler, str]] = ..., kind: _Optional[_Union[JobKind, str]] = ..., target: _Optional[str] = ..., name: _Optional[str] = ..., submit_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., error: _Optional[_Union[JobError, _Mapping]] = ..., cancel_reason: _Optional[str] = ..., result_available: _Optional[bool] = ..., owner: _Optional[str] = ..., request_id: _Optional[str] = ..., depends_on: _Optional[_Iterable[str]] = ...) -> None: ...

class Result(_message.Message):
    __slots__ = ("json", "pickle", "arrow", "format", "serializer", "size_bytes", "streamed")
    JSON_FIELD_NUMBER: _ClassVar[int]
    PICKLE_FIELD_NUMBER: _ClassVar[int]
    ARROW_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SERIALIZER_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    STREAMED_FIELD_NUMBER: _ClassVar[int]
    json: _struct_pb2.Value
    pickle: bytes
    arrow: bytes
    format: ResultFormat
    serializer: Serializer
    size_bytes: int
    streamed: bool
    def __init__(self, json: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., pickle: _Optional[bytes] = ..., arrow: _Optional[bytes] = ..., format: _Optional[_Union[ResultFormat, str]] = ..., serializer: _Optional[_Union[Serializer, str]] = ..., size_bytes: _Optional[int] = ..., streamed: _Optional[bool] = ...) -> None: ...

class WorkerInfo(_message.Message):
    __slots__ = ("address", "name", "nthreads", "memory_limit_bytes", "memory_bytes", "tasks_in_flight")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    NTHREADS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_LIMIT_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    TASKS_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    address: str
    name: str
    nthreads: int
    memory_limit_bytes: int
    memory_bytes: int
    tasks_in_flight: int
    def __init__(self, address: _Optional[str] = ..., name: _Optional[str] = ..., nthreads: _Optional[int] = ..., memory_limit_bytes: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., tasks_in_flight: _Optional[int] = ...) -> None: ...

class ClusterInfo(_message.Message):
    __slots__ = ("scheduler_address", "dashboard_link", "worker_type", "n_workers", "total_threads", "total_memory_bytes", "workers", "n_workers_wanted")
    SCHEDULER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    DASHBOARD_LINK_FIELD_NUMBER: _ClassVar[int]
    WORKER_TYPE_FIELD_NUMBER: _ClassVar[int]
    N_WORKERS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_THREADS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    N_WORKERS_WANTED_FIELD_NUMBER: _ClassVar[int]
    scheduler_address: str
    dashboard_link: str
    worker_type: WorkerType
    n_workers: int
    total_threads: int
    total_memory_bytes: int
    workers: _containers.RepeatedCompositeFieldContainer[WorkerInfo]
    n_workers_wanted: int
    def __init__(self, scheduler_address: _Optional[str] = ..., dashboard_link: _Optional[str] = ..., worker_type: _Optional[_Union[WorkerType, str]] = ..., n_workers: _Optional[int] = ..., total_threads: _Optional[int] = ..., total_memory_bytes: _Optional[int] = ..., workers: _Optional[_Iterable[_Union[WorkerInfo, _Mapping]]] = ..., n_workers_wanted: _Optional[int] = ...) -> None: ...

class Versions(_message.Message):
    __slots__ = ("python", "dask", "distributed", "cloudpickle", "service", "grpcio", "protobuf")
    PYTHON_FIELD_NUMBER: _ClassVar[int]
    DASK_FIELD_NUMBER: _ClassVar[int]
    DISTRIBUTED_FIELD_NUMBER: _ClassVar[int]
    CLOUDPICKLE_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    GRPCIO_FIELD_NUMBER: _ClassVar[int]
    PROTOBUF_FIELD_NUMBER: _ClassVar[int]
    python: str
    dask: str
    distributed: str
    cloudpickle: str
    service: str
    grpcio: str
    protobuf: str
    def __init__(self, python: _Optional[str] = ..., dask: _Optional[str] = ..., distributed: _Optional[str] = ..., cloudpickle: _Optional[str] = ..., service: _Optional[str] = ..., grpcio: _Optional[str] = ..., protobuf: _Optional[str] = ...) -> None: ...

class GetClusterInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetClusterInfoResponse(_message.Message):
    __slots__ = ("cluster", "versions", "schedulers", "default_scheduler", "caller")
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    SCHEDULERS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_SCHEDULER_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    cluster: ClusterInfo
    versions: Versions
    schedulers: _containers.RepeatedScalarFieldContainer[Scheduler]
    default_scheduler: Scheduler
    caller: str
    def __init__(self, cluster: _Optional[_Union[ClusterInfo, _Mapping]] = ..., versions: _Optional[_Union[Versions, _Mapping]] = ..., schedulers: _Optional[_Iterable[_Union[Scheduler, str]]] = ..., default_scheduler: _Optional[_Union[Scheduler, str]] = ..., caller: _Optional[str] = ...) -> None: ...

class Parameter(_message.Message):
    __slots__ = ("name", "type", "required", "default", "keyword_only")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_FIELD_NUMBER: _ClassVar[int]
    KEYWORD_ONLY_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: str
    required: bool
    default: _struct_pb2.Value
    keyword_only: bool
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., required: _Optional[bool] = ..., default: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., keyword_only: _Optional[bool] = ...) -> None: ...

class Function(_message.Message):
    __slots__ = ("name", "description", "parameters", "returns", "signature")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    RETURNS_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    parameters: _containers.RepeatedCompositeFieldContainer[Parameter]
    returns: str
    signature: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., parameters: _Optional[_Iterable[_Union[Parameter, _Mapping]]] = ..., returns: _Optional[str] = ..., signature: _Optional[str] = ...) -> None: ...

class ListFunctionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListFunctionsResponse(_message.Message):
    __slots__ = ("functions",)
    FUNCTIONS_FIELD_NUMBER: _ClassVar[int]
    functions: _containers.RepeatedCompositeFieldContainer[Function]
    def __init__(self, functions: _Optional[_Iterable[_Union[Function, _Mapping]]] = ...) -> None: ...

class RunRequest(_message.Message):
    __slots__ = ("job", "release")
    JOB_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    job: JobSpec
    release: bool
    def __init__(self, job: _Optional[_Union[JobSpec, _Mapping]] = ..., release: _Optional[bool] = ...) -> None: ...

class RunResponse(_message.Message):
    __slots__ = ("job", "result", "cluster")
    JOB_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    job: Job
    result: Result
    cluster: ClusterInfo
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., result: _Optional[_Union[Result, _Mapping]] = ..., cluster: _Optional[_Union[ClusterInfo, _Mapping]] = ...) -> None: ...

class SubmitJobRequest(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: JobSpec
    def __init__(self, job: _Optional[_Union[JobSpec, _Mapping]] = ...) -> None: ...

class SubmitJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class SubmitJobsRequest(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[JobSpec]
    def __init__(self, jobs: _Optional[_Iterable[_Union[JobSpec, _Mapping]]] = ...) -> None: ...

class SubmitJobsResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GetJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class WaitJobRequest(_message.Message):
    __slots__ = ("job_id", "timeout", "result_format", "release")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    RESULT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    timeout: _duration_pb2.Duration
    result_format: ResultFormat
    release: bool
    def __init__(self, job_id: _Optional[str] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., result_format: _Optional[_Union[ResultFormat, str]] = ..., release: _Optional[bool] = ...) -> None: ...

class WaitJobResponse(_message.Message):
    __slots__ = ("job", "result", "timed_out")
    JOB_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    TIMED_OUT_FIELD_NUMBER: _ClassVar[int]
    job: Job
    result: Result
    timed_out: bool
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., result: _Optional[_Union[Result, _Mapping]] = ..., timed_out: _Optional[bool] = ...) -> None: ...

class WaitJobsRequest(_message.Message):
    __slots__ = ("job_ids", "timeout", "result_format", "release")
    JOB_IDS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    RESULT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    job_ids: _containers.RepeatedScalarFieldContainer[str]
    timeout: _duration_pb2.Duration
    result_format: ResultFormat
    release: bool
    def __init__(self, job_ids: _Optional[_Iterable[str]] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., result_format: _Optional[_Union[ResultFormat, str]] = ..., release: _Optional[bool] = ...) -> None: ...

class WaitJobsResponse(_message.Message):
    __slots__ = ("jobs", "timed_out")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    TIMED_OUT_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[WaitJobResponse]
    timed_out: bool
    def __init__(self, jobs: _Optional[_Iterable[_Union[WaitJobResponse, _Mapping]]] = ..., timed_out: _Optional[bool] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id", "reason")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    reason: str
    def __init__(self, job_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class CancelJobResponse(_message.Message):
    __slots__ = ("job", "cancelled")
    JOB_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    job: Job
    cancelled: bool
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., cancelled: _Optional[bool] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("states", "page_size", "page_token")
    STATES_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedScalarFieldContainer[JobState]
    page_size: int
    page_token: str
    def __init__(self, states: _Optional[_Iterable[_Union[JobState, str]]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("tasks_done", "tasks_total")
    TASKS_DONE_FIELD_NUMBER: _ClassVar[int]
    TASKS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    tasks_done: int
    tasks_total: int
    def __init__(self, tasks_done: _Optional[int] = ..., tasks_total: _Optional[int] = ...) -> None: ...

class WatchJobResponse(_message.Message):
    __slots__ = ("job", "progress")
    JOB_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    job: Job
    progress: Progress
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ...) -> None: ...

class GetJobResultRequest(_message.Message):
    __slots__ = ("job_id", "result_format", "offset", "chunk_size", "release", "checksum_last")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_LAST_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    result_format: ResultFormat
    offset: int
    chunk_size: int
    release: bool
    checksum_last: bool
    def __init__(self, job_id: _Optional[str] = ..., result_format: _Optional[_Union[ResultFormat, str]] = ..., offset: _Optional[int] = ..., chunk_size: _Optional[int] = ..., release: _Optional[bool] = ..., checksum_last: _Optional[bool] = ...) -> None: ...

class ResultHeader(_message.Message):
    __slots__ = ("format", "serializer", "total_size", "sha256", "segment_sizes", "offset")
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SERIALIZER_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_SIZES_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    format: ResultFormat
    serializer: Serializer
    total_size: int
    sha256: str
    segment_sizes: _containers.RepeatedScalarFieldContainer[int]
    offset: int
    def __init__(self, format: _Optional[_Union[ResultFormat, str]] = ..., serializer: _Optional[_Union[Serializer, str]] = ..., total_size: _Optional[int] = ..., sha256: _Optional[str] = ..., segment_sizes: _Optional[_Iterable[int]] = ..., offset: _Optional[int] = ...) -> None: ...

class ResultTrailer(_message.Message):
    __slots__ = ("sha256",)
    SHA256_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    def __init__(self, sha256: _Optional[str] = ...) -> None: ...

class GetJobResultResponse(_message.Message):
    __slots__ = ("header", "chunk", "trailer")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    TRAILER_FIELD_NUMBER: _ClassVar[int]
    header: ResultHeader
    chunk: bytes
    trailer: ResultTrailer
    def __init__(self, header: _Optional[_Union[ResultHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ..., trailer: _Optional[_Union[ResultTrailer, _Mapping]] = ...) -> None: ...

class ReleaseJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class ReleaseJobResponse(_message.Message):
    __slots__ = ("job", "released")
    JOB_FIELD_NUMBER: _ClassVar[int]
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    job: Job
    released: bool
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., released: _Optional[bool] = ...) -> None: ...

class ObjectHeader(_message.Message):
    __slots__ = ("sha256", "size_bytes", "segment_sizes", "serializer")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_SIZES_FIELD_NUMBER: _ClassVar[int]
    SERIALIZER_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    size_bytes: int
    segment_sizes: _containers.RepeatedScalarFieldContainer[int]
    serializer: Serializer
    def __init__(self, sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., segment_sizes: _Optional[_Iterable[int]] = ..., serializer: _Optional[_Union[Serializer, str]] = ...) -> None: ...

class PutObjectRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: ObjectHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[ObjectHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class ObjectRef(_message.Message):
    __slots__ = ("object_id", "size_bytes")
    OBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    object_id: str
    size_bytes: int
    def __init__(self, object_id: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class PutObjectResponse(_message.Message):
    __slots__ = ("object", "existed")
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    EXISTED_FIELD_NUMBER: _ClassVar[int]
    object: ObjectRef
    existed: bool
    def __init__(self, object: _Optional[_Union[ObjectRef, _Mapping]] = ..., existed: _Optional[bool] = ...) -> None: ...

class GetObjectRequest(_message.Message):
    __slots__ = ("object_id",)
    OBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    object_id: str
    def __init__(self, object_id: _Optional[str] = ...) -> None: ...

class GetObjectResponse(_message.Message):
    __slots__ = ("object",)
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    object: ObjectRef
    def __init__(self, object: _Optional[_Union[ObjectRef, _Mapping]] = ...) -> None: ...

class DeleteObjectRequest(_message.Message):
    __slots__ = ("object_id",)
    OBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    object_id: str
    def __init__(self, object_id: _Optional[str] = ...) -> None: ...

class DeleteObjectResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...
