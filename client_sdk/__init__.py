"""Python SDK of the Dask Compute Service.

Example::

    from client_sdk import ComputeClient

    with ComputeClient("127.0.0.1:50051") as client:
        print(client)                      # workers, threads, memory
        client.run("pi", samples=10**6)    # a named function
        client.submit(sum, [1, 2]).result()  # any Python callable
"""

from client_sdk.client import ComputeClient, Job
from client_sdk.errors import (
    ComputeError,
    DeadlineExceeded,
    FailedPrecondition,
    FunctionNotFound,
    InvalidArguments,
    JobCancelled,
    JobFailed,
    JobNotFound,
    JobTimeout,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    RPCError,
    ServiceUnavailable,
    StatusCode,
    VersionMismatch,
)
from client_sdk.types import (
    SCHEDULERS,
    ClusterInfo,
    FunctionInfo,
    JobError,
    JobInfo,
    JobState,
    Parameter,
    Versions,
    WorkerInfo,
)

__all__ = [
    "SCHEDULERS",
    "ClusterInfo",
    "ComputeClient",
    "ComputeError",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FunctionInfo",
    "FunctionNotFound",
    "InvalidArguments",
    "Job",
    "JobCancelled",
    "JobError",
    "JobFailed",
    "JobInfo",
    "JobNotFound",
    "JobState",
    "JobTimeout",
    "NotFound",
    "Parameter",
    "PermissionDenied",
    "RPCError",
    "ResourceExhausted",
    "ServiceUnavailable",
    "StatusCode",
    "VersionMismatch",
    "Versions",
    "WorkerInfo",
]
