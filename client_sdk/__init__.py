"""Python SDK of the Dask Compute Service.

Example::

    from client_sdk import ComputeClient

    with ComputeClient("127.0.0.1:50051") as client:
        print(client)                        # workers, threads, memory
        client.run("pi", samples=10**6)      # a named function
        client.submit(sum, [1, 2]).result()  # any Python callable
        client.compute(x)                    # Dask collections, as dask.compute
        with client.as_default():
            x.compute()                      # Dask's default scheduler is the service

:class:`AsyncComputeClient` has the same methods as coroutines.
"""

from client_sdk._channel import TLSConfig
from client_sdk._dask import DefaultScheduler, RemoteScheduler
from client_sdk.aio import AsyncComputeClient, AsyncJob
from client_sdk.client import ComputeClient
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
    UntrustedResult,
    VersionMismatch,
)
from client_sdk.futures import DoneAndNotDone, as_completed, fire_and_forget, wait
from client_sdk.job import Job
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

__all__ = [
    "SCHEDULERS",
    "AsyncComputeClient",
    "AsyncJob",
    "ClusterInfo",
    "ComputeClient",
    "ComputeError",
    "DeadlineExceeded",
    "DefaultScheduler",
    "DoneAndNotDone",
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
    "JobUpdate",
    "NotFound",
    "ObjectRef",
    "Parameter",
    "PermissionDenied",
    "Progress",
    "RPCError",
    "RemoteScheduler",
    "ResourceExhausted",
    "ServiceUnavailable",
    "StatusCode",
    "TLSConfig",
    "UntrustedResult",
    "VersionMismatch",
    "Versions",
    "WorkerInfo",
    "as_completed",
    "fire_and_forget",
    "wait",
]
