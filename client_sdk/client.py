"""The synchronous Python client of the Dask Compute Service."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import grpc

from client_sdk import _convert
from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk._proto.compute.v1 import compute_pb2_grpc as pb_grpc
from client_sdk.errors import JobTimeout, StatusCode, error_for
from client_sdk.types import ClusterInfo, FunctionInfo, JobInfo, JobState

DEFAULT_TARGET = "127.0.0.1:50051"
#: Deadline of calls that return at once, in seconds.
DEFAULT_TIMEOUT = 30.0
#: Largest message the client sends or accepts (the server's default limit).
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
ERROR_KEY = "dask-compute-error"

# gRPC's own retry policy: calls that change nothing are retried when the
# server is UNAVAILABLE (restarting, or not yet listening).
_IDEMPOTENT = ("GetClusterInfo", "ListFunctions", "GetJob", "WaitJob", "ListJobs", "CancelJob")
SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{"service": "compute.v1.ComputeService", "method": m} for m in _IDEMPOTENT]
                + [{"service": "grpc.health.v1.Health"}],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)


def channel_options() -> list[tuple[str, Any]]:
    """Channel arguments: message limits, keepalive and the retry policy."""
    return [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.enable_retries", 1),
        ("grpc.service_config", SERVICE_CONFIG),
    ]


def normalize_target(target: str | None) -> str:
    """``host:port`` from a target given as ``host:port`` or ``grpc://host:port``.

    ``None`` reads ``DASK_COMPUTE_TARGET``, then falls back to 127.0.0.1:50051.
    """
    target = target or os.environ.get("DASK_COMPUTE_TARGET") or DEFAULT_TARGET
    if target.startswith("grpc://"):
        target = target[len("grpc://") :]
    if not target or "/" in target:
        raise ValueError(f"target must be host:port or grpc://host:port, got {target!r}")
    return target


def raise_rpc_error(err: grpc.RpcError) -> None:
    """Re-raise a failed call as the SDK exception for its status."""
    code = StatusCode[err.code().name] if err.code() is not None else StatusCode.UNKNOWN
    name = ""
    trailing = err.trailing_metadata() if hasattr(err, "trailing_metadata") else None
    for key, value in trailing or ():
        if key == ERROR_KEY:
            name = value
    raise error_for(code, err.details() or "", name) from err


class ComputeClient:
    """A connection to a Dask Compute Service.

    Args:
        target: ``host:port`` or ``grpc://host:port``; ``None`` reads
            ``DASK_COMPUTE_TARGET`` (default ``127.0.0.1:50051``).
        timeout: Deadline in seconds of calls that return at once (waits use
            their own timeout).

    Example::

        with ComputeClient("127.0.0.1:50051") as client:
            client.run("add", 2, 3)          # 5
            job = client.submit(sum, [1, 2, 3], scheduler="threads")
            job.result()                     # 6
    """

    def __init__(self, target: str | None = None, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.target = normalize_target(target)
        self.timeout = timeout
        self._channel = grpc.insecure_channel(self.target, options=channel_options())
        self._stub = pb_grpc.ComputeServiceStub(self._channel)

    # -- plumbing ----------------------------------------------------------

    def _call(self, method: str, request: Any, timeout: float | None = None) -> Any:
        try:
            return getattr(self._stub, method)(request, timeout=timeout or self.timeout)
        except grpc.RpcError as err:
            raise_rpc_error(err)

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> ComputeClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        try:
            info = self.info()
        except Exception:
            return f"<{type(self).__name__}: 'grpc://{self.target}' not connected>"
        memory = info.total_memory / 2**30
        return (
            f"<{type(self).__name__}: 'grpc://{self.target}' workers={info.n_workers} "
            f"threads={info.total_threads}, memory={memory:.2f} GiB>"
        )

    # -- cluster -----------------------------------------------------------

    def info(self) -> ClusterInfo:
        """The cluster: workers, threads, memory, dashboard, versions."""
        response = self._call("GetClusterInfo", pb.GetClusterInfoRequest())
        return _convert.cluster_info(response.cluster, response)

    def functions(self) -> list[FunctionInfo]:
        """The named functions the service offers."""
        response = self._call("ListFunctions", pb.ListFunctionsRequest())
        return [_convert.function_info(f) for f in response.functions]

    # -- jobs --------------------------------------------------------------

    def run(
        self,
        function: str,
        *args: Any,
        scheduler: str | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Any:
        """Call a named function with JSON arguments and return its value.

        Raises:
            FunctionNotFound: No such function.
            InvalidArguments: Arguments that do not fit its signature.
            Exception: Whatever the function raised.
        """
        spec = _convert.function_call_spec(function, args, kwargs, scheduler)
        response = self._call("Run", pb.RunRequest(job=spec), timeout=timeout or None)
        return _convert.outcome(_convert.job_info(response.job), response.result)

    def submit(
        self, func: Callable[..., Any], *args: Any, scheduler: str | None = None, **kwargs: Any
    ) -> Job:
        """Send a Python callable to run on the cluster; returns a :class:`Job` at once."""
        spec = _convert.pickled_call_spec(func, args, kwargs, scheduler)
        return self._submit(spec)

    def submit_function(
        self, function: str, *args: Any, scheduler: str | None = None, **kwargs: Any
    ) -> Job:
        """Submit a named function call; returns a :class:`Job` at once."""
        return self._submit(_convert.function_call_spec(function, args, kwargs, scheduler))

    def compute(self, *collections: Any, scheduler: str | None = None) -> Any:
        """Compute Dask collections on the service; returns what ``dask.compute`` would."""
        spec = _convert.graph_spec(tuple(collections), scheduler)
        response = self._call("Run", pb.RunRequest(job=spec), timeout=None)
        return _convert.outcome(_convert.job_info(response.job), response.result)

    def _submit(self, spec: pb.JobSpec) -> Job:
        response = self._call("SubmitJob", pb.SubmitJobRequest(job=spec))
        return Job(self, _convert.job_info(response.job))

    def get_job(self, job_id: str) -> JobInfo:
        """A job's record."""
        return _convert.job_info(self._call("GetJob", pb.GetJobRequest(job_id=job_id)).job)

    def wait(self, job_id: str, timeout: float | None = None) -> tuple[JobInfo, Any]:
        """Wait for a job to finish.

        Returns:
            The job's record and its ``Result`` message (``None`` unless it
            succeeded).

        Raises:
            JobTimeout: ``timeout`` seconds passed first.
        """
        request = pb.WaitJobRequest(job_id=job_id)
        if timeout is not None:
            request.timeout.FromNanoseconds(int(timeout * 1e9))
        deadline = None if timeout is None else timeout + self.timeout
        response = self._call("WaitJob", request, timeout=deadline or 10**7)
        job = _convert.job_info(response.job)
        if response.timed_out and not job.state.finished:
            raise JobTimeout(f"job {job_id} did not finish within {timeout}s (it is {job.state.value})")
        return job, (response.result if response.HasField("result") else None)

    def cancel(self, job_id: str, reason: str = "") -> bool:
        """Cancel a job; returns whether this call cancelled it."""
        response = self._call("CancelJob", pb.CancelJobRequest(job_id=job_id, reason=reason))
        return response.cancelled

    def list_jobs(
        self, states: Sequence[JobState | str] = (), page_size: int = 100
    ) -> Iterable[JobInfo]:
        """Job records, newest first, fetched page by page as you iterate."""
        token = ""
        while True:
            request = pb.ListJobsRequest(
                states=_convert.job_states(states), page_size=page_size, page_token=token
            )
            response = self._call("ListJobs", request)
            yield from (_convert.job_info(j) for j in response.jobs)
            token = response.next_page_token
            if not token:
                return


class Job:
    """A submitted job; behaves like a :class:`concurrent.futures.Future`.

    Attributes:
        job_id: The job's id on the service.
    """

    def __init__(self, client: ComputeClient, info: JobInfo) -> None:
        self._client = client
        self.job_id = info.job_id
        self._info = info
        self._result_message: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<Job {self.job_id} {self._info.state.value}>"

    def status(self) -> JobState:
        """The job's state now."""
        if not self._info.state.finished:
            self._info = self._client.get_job(self.job_id)
        return self._info.state

    def done(self) -> bool:
        """Whether the job has finished (succeeded, failed or cancelled)."""
        return self.status().finished

    def _wait(self, timeout: float | None) -> JobInfo:
        with self._lock:
            needs_result = self._info.state is JobState.SUCCEEDED and self._result_message is None
            if not self._info.state.finished or needs_result:
                self._info, self._result_message = self._client.wait(self.job_id, timeout)
            return self._info

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the job and return its value, or raise what it raised.

        Raises:
            JobTimeout: ``timeout`` seconds passed first.
            JobCancelled: The job was cancelled.
        """
        return _convert.outcome(self._wait(timeout), self._result_message)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Wait for the job; the exception it raised, or ``None`` if it succeeded."""
        info = self._wait(timeout)
        return None if info.state is JobState.SUCCEEDED else _convert.job_exception(info)

    def cancel(self) -> bool:
        """Cancel the job; returns whether this call cancelled it."""
        cancelled = self._client.cancel(self.job_id)
        self._info = self._client.get_job(self.job_id)
        return cancelled

    def info(self) -> JobInfo:
        """The job's full record now."""
        self.status()
        return self._info
