"""What the SDK does, written once for both clients ("sans-I/O").

Every operation is a generator that yields the :class:`Call` it needs made and
is sent the response (or has the call's exception thrown into it). It builds
requests and reads responses through :mod:`client_sdk._convert` and never
touches a channel. :class:`client_sdk.ComputeClient` drives these generators
with blocking calls and :class:`client_sdk.AsyncComputeClient` with ``await``;
:func:`blocking` and :func:`coroutine` turn an operation into a method of
either, keeping its signature and docstring. This is the pattern of h11 and
other sans-I/O protocol libraries: one copy of the logic, two thin drivers.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import itertools
from collections.abc import Callable, Generator, Iterable
from typing import Any, Concatenate, ParamSpec, TypeVar

from client_sdk import _channel, _convert, _dask, _versions
from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk.errors import DeadlineExceeded, JobTimeout
from client_sdk.types import ClusterInfo, FunctionInfo, JobInfo, JobState, Versions

T = TypeVar("T")
P = ParamSpec("P")

#: An operation: yields calls, receives their responses, returns a ``T``.
Op = Generator["Call", Any, T]

#: Deadline of ``run`` and ``compute`` given no ``timeout``, in seconds (one day).
MAX_RUN_WAIT = 24 * 3600.0
#: Longest single WaitJob; longer waits repeat it, so every call has a deadline.
LONG_POLL = 60.0
#: Most jobs in one SubmitJobs call (the server's limit).
MAX_BATCH = 10_000
#: A SubmitJobs call is cut short once its payloads reach this many bytes.
MAX_BATCH_BYTES = 16 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class Call:
    """One unary call an operation needs made.

    Attributes:
        method: The ComputeService method, for example "GetJob".
        request: Its request message.
        timeout: The call's deadline in seconds; ``None`` is the client's default.
    """

    method: str
    request: Any
    timeout: float | None = None


class ClientBase:
    """State and operations both clients share.

    Args:
        target: ``host:port``, ``grpc://host:port`` or ``grpcs://host:port``
            (TLS); ``None`` reads ``DASK_COMPUTE_TARGET`` (default
            ``127.0.0.1:50051``).
        timeout: Deadline in seconds of calls that answer at once (waits use
            their own timeout). Default 30.
        token: A bearer token, sent as ``authorization: Bearer <token>``
            metadata with every call. Default: none.
        tls: ``False`` for plaintext (the default, unless the target says
            ``grpcs://``); ``True`` for TLS against the system's root
            certificates; a path to a PEM file (or the PEM bytes) for TLS
            against that root certificate.
        check_versions: Refuse to send pickled work when the server's dask or
            distributed version differs from this side's (Python minor and
            cloudpickle major differences are always refused). Default ``True``.

    Raises:
        ValueError: A malformed target, timeout or token.
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        timeout: float = _channel.DEFAULT_TIMEOUT,
        token: str | None = None,
        tls: _channel.TLS = False,
        check_versions: bool = True,
    ) -> None:
        self.target, scheme_tls = _channel.parse_target(target)
        if not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.timeout = float(timeout)
        self.check_versions = check_versions
        self._metadata = _channel.call_metadata(token)
        self._credentials = _channel.credentials(True if scheme_tls and not tls else tls)
        self._server_versions: Versions | None = None
        self._versions_ok = False
        self._cluster: ClusterInfo | None = None

    @property
    def address(self) -> str:
        """The server's address as a URL: ``grpc://host:port`` or ``grpcs://host:port``."""
        return f"{'grpcs' if self._credentials else 'grpc'}://{self.target}"

    def _new_job(self, info: JobInfo) -> Any:
        """Wrap a job record in the client's job type and start watching it."""
        raise NotImplementedError

    def _describe(self, info: ClusterInfo | None) -> str:
        name = type(self).__name__
        if info is None:
            return f"<{name}: '{self.address}' not connected>"
        return (
            f"<{name}: '{self.address}' workers={info.n_workers} "
            f"threads={info.total_threads}, memory={info.total_memory / 2**30:.2f} GiB>"
        )

    # -- cluster -----------------------------------------------------------

    def info(self) -> Op[ClusterInfo]:
        """Describe the cluster and the server.

        Returns:
            Workers, threads, memory, dashboard link, the server's software
            versions and the schedulers jobs may name.
        """
        response = yield Call("GetClusterInfo", pb.GetClusterInfoRequest())
        info = _convert.cluster_info(response.cluster, response)
        self._server_versions = info.versions
        self._cluster = info
        return info

    def functions(self) -> Op[list[FunctionInfo]]:
        """List the named functions the service offers, sorted by name."""
        response = yield Call("ListFunctions", pb.ListFunctionsRequest())
        return [_convert.function_info(f) for f in response.functions]

    def _check_versions(self) -> Op[None]:
        # Asked once per client, before the first pickled work is sent.
        if self._versions_ok:
            return
        if self._server_versions is None:
            response = yield Call("GetClusterInfo", pb.GetClusterInfoRequest())
            self._server_versions = _convert.versions(response.versions)
        _versions.check(_versions.local_versions(), self._server_versions, self.check_versions)
        self._versions_ok = True

    # -- running -----------------------------------------------------------

    def _run_spec(self, spec: pb.JobSpec, timeout: float | None, what: str) -> Op[Any]:
        call = Call("Run", pb.RunRequest(job=spec), timeout or MAX_RUN_WAIT)
        try:
            response = yield call
        except DeadlineExceeded as exc:
            raise JobTimeout(
                f"{what} did not finish within {call.timeout:g}s; the server cancelled it"
            ) from exc
        return _convert.outcome(_convert.job_info(response.job), response.result)

    def run(
        self,
        function: str,
        *args: Any,
        scheduler: str | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Op[Any]:
        """Call a named function with JSON arguments and wait for its value.

        Args:
            function: The function's name, as :meth:`functions` lists it.
            *args: Positional arguments (JSON values).
            scheduler: "distributed", "threads", "processes" or "synchronous";
                ``None`` is the server's default.
            timeout: Seconds to wait; the job is cancelled when they pass.
                ``None`` waits up to :data:`MAX_RUN_WAIT` (use :meth:`submit`
                for longer jobs).
            **kwargs: Keyword arguments (JSON values).

        Returns:
            The function's value, with its Python type (tuples stay tuples).

        Raises:
            FunctionNotFound: No such function.
            InvalidArguments: Arguments that do not fit its signature.
            JobTimeout: ``timeout`` passed first.
            Exception: Whatever the function raised.
        """
        spec = _convert.function_call_spec(function, args, kwargs, scheduler)
        return (yield from self._run_spec(spec, timeout, f"{function}()"))

    def compute(
        self,
        *args: Any,
        scheduler: str | None = None,
        timeout: float | None = None,
        traverse: bool = True,
    ) -> Op[Any]:
        """Compute Dask collections on the service, as ``dask.compute(*args)`` does locally.

        Args:
            *args: Dask collections (arrays, bags, dataframes, delayed), plain
                values, and with ``traverse`` lists, tuples and dicts of them.
            scheduler: The service's scheduler: "distributed", "threads",
                "processes" or "synchronous"; ``None`` is the server's default.
            timeout: Seconds to wait; the computation is cancelled when they
                pass. ``None`` waits up to :data:`MAX_RUN_WAIT`.
            traverse: Look for collections inside lists, tuples and dicts.

        Returns:
            A tuple with one computed value per argument, as ``dask.compute``.

        Raises:
            VersionMismatch: This side cannot send pickled work to the server.
            JobTimeout: ``timeout`` passed first.
            Exception: Whatever a task raised.
        """
        collections, repack = _dask.unpack(args, traverse)
        if not collections:
            return repack(())
        yield from self._check_versions()
        spec = _convert.graph_spec(collections, scheduler)
        return repack((yield from self._run_spec(spec, timeout, "compute")))

    def get(
        self,
        dsk: Any,
        keys: Any,
        *,
        scheduler: str | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Op[Any]:
        """Compute ``keys`` of a task graph on the service: a Dask scheduler function.

        ``x.compute(scheduler=client.get)`` computes ``x`` here, as
        ``x.compute(scheduler=dask.threaded.get)`` would locally.

        Args:
            dsk: A task graph (dict or ``HighLevelGraph``) or the expression
                modern Dask passes to schedulers.
            keys: A key or a (nested) list of keys.
            scheduler: The service's scheduler; ``None`` is the server's default.
            timeout: Seconds to wait, as in :meth:`compute`.
            **kwargs: Other scheduler options Dask passes; ignored.

        Returns:
            The values of ``keys``, shaped like ``keys``.
        """
        yield from self._check_versions()
        spec = _convert.graph_spec((_dask.graph(dsk), keys), scheduler)
        return (yield from self._run_spec(spec, timeout, "get"))

    # -- jobs ----------------------------------------------------------------

    def submit(
        self, func: Callable[..., Any], *args: Any, scheduler: str | None = None, **kwargs: Any
    ) -> Op[Any]:
        """Send ``func(*args, **kwargs)`` to run on the service, without waiting.

        ``func`` and its arguments are cloudpickled: a function defined in
        ``__main__`` travels by value, one from an installed module by
        reference (the module must be installed on the server and workers).

        Args:
            func: Any picklable callable.
            *args: Its positional arguments.
            scheduler: "distributed", "threads", "processes" or "synchronous";
                ``None`` is the server's default.
            **kwargs: Its keyword arguments.

        Returns:
            A :class:`client_sdk.Job` (an :class:`client_sdk.AsyncJob` on the
            asynchronous client), already watched: a Future-like handle.

        Raises:
            VersionMismatch: This side cannot send pickled work to the server.
            InvalidArguments: The server could not load the payload.
        """
        yield from self._check_versions()
        spec = _convert.pickled_call_spec(func, args, kwargs, scheduler)
        response = yield Call("SubmitJob", pb.SubmitJobRequest(job=spec))
        return self._new_job(_convert.job_info(response.job))

    def submit_function(
        self, function: str, *args: Any, scheduler: str | None = None, **kwargs: Any
    ) -> Op[Any]:
        """Submit a named function call without waiting.

        Args:
            function: The function's name.
            *args: Positional arguments (JSON values).
            scheduler: The scheduler; ``None`` is the server's default.
            **kwargs: Keyword arguments (JSON values).

        Returns:
            A :class:`client_sdk.Job` (:class:`client_sdk.AsyncJob` when async).
        """
        spec = _convert.function_call_spec(function, args, kwargs, scheduler)
        response = yield Call("SubmitJob", pb.SubmitJobRequest(job=spec))
        return self._new_job(_convert.job_info(response.job))

    def map(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        *iterables: Iterable[Any],
        scheduler: str | None = None,
        batch_size: int = 1000,
        **kwargs: Any,
    ) -> Op[list[Any]]:
        """Submit ``func`` over the items of the iterables, many calls per round trip.

        As the built-in ``map``: the i-th call gets the i-th item of each
        iterable, and stops at the shortest. Calls go to the server in
        ``SubmitJobs`` batches; a batch is accepted whole or not at all, but
        batches already accepted keep running if a later one is refused.

        Args:
            func: Any picklable callable.
            iterable: The first arguments.
            *iterables: Further positional arguments.
            scheduler: The scheduler; ``None`` is the server's default.
            batch_size: Most calls per round trip, 1 to 10,000 (default 1000).
                A batch is also cut at 16 MiB of payload.
            **kwargs: Keyword arguments passed to every call.

        Returns:
            One job per call, in order.
        """
        if not 1 <= batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size must be between 1 and {MAX_BATCH}, got {batch_size}")
        yield from self._check_versions()
        jobs = []
        calls = iter(zip(iterable, *iterables))
        while batch := _next_batch(calls, func, kwargs, scheduler, batch_size):
            response = yield Call("SubmitJobs", pb.SubmitJobsRequest(jobs=batch))
            jobs.extend(self._new_job(_convert.job_info(j)) for j in response.jobs)
        return jobs

    def get_job(self, job_id: str) -> Op[JobInfo]:
        """A job's record as it is now.

        Raises:
            JobNotFound: No such job, or its record expired.
        """
        response = yield Call("GetJob", pb.GetJobRequest(job_id=job_id))
        return _convert.job_info(response.job)

    def job(self, job_id: str) -> Op[Any]:
        """A Future-like handle on an existing job, for example one submitted elsewhere.

        Raises:
            JobNotFound: No such job, or its record expired.
        """
        info = yield from ClientBase.get_job(self, job_id)
        return self._new_job(info)

    def wait(self, job_id: str, timeout: float | None = None) -> Op[JobInfo]:
        """Wait until a job finishes and return its record.

        Args:
            job_id: The job's id.
            timeout: Seconds to wait; ``None`` waits as long as it takes (in
                calls of at most :data:`LONG_POLL` seconds each).

        Raises:
            JobTimeout: ``timeout`` passed first; the job goes on.
            JobNotFound: No such job.
        """
        info, _ = yield from self._wait_once(job_id, timeout)
        if not info.state.finished:
            raise JobTimeout(f"job {job_id} did not finish within {timeout:g}s ({info.state.value})")
        return info

    def _wait_once(self, job_id: str, timeout: float | None) -> Op[tuple[JobInfo, Any]]:
        # Bounded long polls until the job finishes or `timeout` passes.
        remaining = timeout
        while True:
            step = LONG_POLL if remaining is None else min(remaining, LONG_POLL)
            request = _convert.wait_request(job_id, step)
            response = yield Call("WaitJob", request, step + self.timeout)
            info = _convert.job_info(response.job)
            if info.state.finished or remaining is not None and remaining <= LONG_POLL:
                return info, (response.result if response.HasField("result") else None)
            if remaining is not None:
                remaining -= LONG_POLL

    def cancel(self, job_id: str, reason: str = "") -> Op[bool]:
        """Cancel a queued or running job.

        Args:
            job_id: The job's id.
            reason: Recorded in the job's ``cancel_reason``.

        Returns:
            Whether the job is cancelled now (``False``: it had already
            succeeded or failed).
        """
        info = yield from self._cancel(job_id, reason)
        return info.state is JobState.CANCELLED

    def _cancel(self, job_id: str, reason: str = "") -> Op[JobInfo]:
        request = pb.CancelJobRequest(job_id=job_id, reason=reason)
        response = yield Call("CancelJob", request)
        return _convert.job_info(response.job)


def _next_batch(
    calls: Iterable[tuple[Any, ...]],
    func: Callable[..., Any],
    kwargs: dict[str, Any],
    scheduler: str | None,
    size: int,
) -> list[pb.JobSpec]:
    batch: list[pb.JobSpec] = []
    total = 0
    for args in itertools.islice(calls, size):
        spec = _convert.pickled_call_spec(func, args, kwargs, scheduler)
        batch.append(spec)
        total += len(spec.pickled_call.payload)
        if total >= MAX_BATCH_BYTES:
            break
    return batch


def list_request(states: Iterable[JobState | str], page_size: int, token: str) -> Call:
    """The ListJobs call of one page."""
    request = pb.ListJobsRequest(
        states=_convert.job_states(list(states)), page_size=page_size, page_token=token
    )
    return Call("ListJobs", request)


def _signature(op: Callable[..., Any]) -> inspect.Signature:
    # The method returns what the operation returns, not the generator.
    signature = inspect.signature(op)
    returns = signature.return_annotation
    if isinstance(returns, str) and returns.startswith("Op[") and returns.endswith("]"):
        signature = signature.replace(return_annotation=returns[3:-1])
    return signature


def blocking(op: Callable[Concatenate[Any, P], Op[T]]) -> Callable[Concatenate[Any, P], T]:
    """A blocking method running ``op`` through ``self._drive``."""

    @functools.wraps(op)
    def method(self: Any, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._drive(op(self, *args, **kwargs))

    method.__signature__ = _signature(op)  # type: ignore[attr-defined]
    return method


def coroutine(op: Callable[Concatenate[Any, P], Op[T]]) -> Callable[Concatenate[Any, P], Any]:
    """A coroutine method running ``op`` through ``await self._drive``."""

    @functools.wraps(op)
    async def method(self: Any, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._drive(op(self, *args, **kwargs))

    method.__signature__ = _signature(op)  # type: ignore[attr-defined]
    return method
