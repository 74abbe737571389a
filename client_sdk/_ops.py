"""What the SDK does, written once for both clients ("sans-I/O").

Every operation is a generator that yields the call it needs made and is
sent the response (or has the call's exception thrown into it); the protocol
is in :mod:`client_sdk._sansio`. Operations build requests and read responses
through :mod:`client_sdk._convert` and never touch a channel.
:class:`client_sdk.ComputeClient` drives them with blocking calls and
:class:`client_sdk.AsyncComputeClient` with ``await``. This is the pattern of
h11 and other sans-I/O protocol libraries: one copy of the logic, two thin
drivers.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from client_sdk import _channel, _convert, _dask, _pickle, _versions
from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk._results import ResultAssembler, StreamedResult
from client_sdk._sansio import Call, Op, Stream
from client_sdk.errors import (
    DeadlineExceeded,
    JobTimeout,
    NotFound,
    ServiceUnavailable,
    StatusCode,
)
from client_sdk.types import (
    ClusterInfo,
    FunctionInfo,
    JobInfo,
    JobState,
    JobUpdate,
    ObjectRef,
    Versions,
)

logger = logging.getLogger(__name__)

#: Deadline of ``run`` and ``compute`` given no ``timeout``, in seconds (one day).
MAX_RUN_WAIT = 24 * 3600.0
#: Longest single WaitJob; longer waits repeat it, so every call has a deadline.
LONG_POLL = 60.0
#: Deadline of one GetJobResult stream, in seconds; a stream cut off resumes.
RESULT_STREAM_TIMEOUT = 300.0
#: Streams in a row that may fail without a byte of progress before giving up.
RESULT_STREAM_ATTEMPTS = 3
#: Most jobs in one SubmitJobs call (the server's limit).
MAX_BATCH = 10_000
#: Bytes per message of an upload (the server accepts up to 64 MiB per message).
UPLOAD_CHUNK = 1024 * 1024
#: Deadline of an upload, in seconds.
UPLOAD_DEADLINE = 3600.0
#: A SubmitJobs call is cut short once its payloads reach this many bytes.
MAX_BATCH_BYTES = 16 * 1024 * 1024
#: Longest single WatchJob stream; longer watches reopen it, so every call has a deadline.
WATCH_STREAM = 600.0


class ClientBase:
    """State and operations both clients share.

    Takes the arguments documented on :class:`client_sdk.ComputeClient`, then
    calls :meth:`_open` for the subclass to open its channel.

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
        self._open()

    def _open(self) -> None:
        """Open the channel (each client its own kind)."""
        raise NotImplementedError

    @property
    def address(self) -> str:
        """The server's address as a URL: ``grpc://host:port`` or ``grpcs://host:port``."""
        return f"{'grpcs' if self._credentials else 'grpc'}://{self.target}"

    def _new_job(self, info: JobInfo, owned: bool = True) -> Any:
        """Wrap a job record in the client's job type and start watching it.

        ``owned`` jobs (submitted by this client) release a streamed result
        once they have read it.
        """
        raise NotImplementedError

    def _new_jobs(self, infos: list[JobInfo]) -> list[Any]:
        """Wrap a batch of new job records in the client's job type; watch them together."""
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

    def _run_spec(
        self, spec: pb.JobSpec, timeout: float | None, what: str, job_name: str | None
    ) -> Op[Any]:
        # run() returns only the value: the server frees its copy once sent.
        # Its timeout is the call's deadline: when it passes the server cancels
        # the job, and its record says so ("the deadline of the Run call passed").
        _convert.job_options(spec, job_name, None)
        call = Call("Run", pb.RunRequest(job=spec, release=True), timeout or MAX_RUN_WAIT)
        try:
            response = yield call
        except DeadlineExceeded as exc:
            raise JobTimeout(
                f"{what} did not finish within {call.timeout:g}s; the server cancelled it"
            ) from exc
        result = response.result if response.HasField("result") else None
        if (
            response.job.state == pb.JOB_STATE_SUCCEEDED
            and result is not None
            and not result.streamed
        ):
            return _convert.value(result)  # the common case, without the record's conversion
        info = _convert.job_info(response.job)
        value, error = yield from self._settled(info, result, release=True)
        if error is not None:
            raise error
        return value

    def _settled(
        self, info: JobInfo, result: pb.Result | None, release: bool = True, fetch: bool = True
    ) -> Op[tuple[Any, BaseException | None]]:
        # What a finished job stands for: (value, None) or (None, exception).
        # A result too large to come inline is streamed now (and released on
        # the server afterwards, when `release`), or with `fetch=False` left
        # there as a StreamedResult for its job to download when asked.
        try:
            if info.state is JobState.SUCCEEDED and result is not None and result.streamed:
                if not fetch:
                    return StreamedResult(info.job_id, result.size_bytes), None
                return (yield from self._fetch(info.job_id, release)), None
            return _convert.resolve(info, result)
        except Exception as exc:  # the result could not be read here
            return None, exc

    def _fetch(self, job_id: str, release: bool) -> Op[Any]:
        # GetJobResult, resumed from the last byte received when a stream is
        # cut off, until RESULT_STREAM_ATTEMPTS streams in a row bring nothing.
        assembler = ResultAssembler()
        idle = 0
        while not assembler.complete:
            before = assembler.received
            # The SHA-256 comes last: the server sends the first bytes while
            # it hashes them all, and this side hashes them as they arrive.
            request = pb.GetJobResultRequest(
                job_id=job_id, offset=before, release=release, checksum_last=True
            )
            try:
                yield Stream("GetJobResult", request, assembler.feed, RESULT_STREAM_TIMEOUT)
            except (ServiceUnavailable, DeadlineExceeded):
                if idle + 1 >= RESULT_STREAM_ATTEMPTS:
                    raise
            if assembler.restart:
                assembler.reset()
            idle = 0 if assembler.received > before else idle + 1
            if idle >= RESULT_STREAM_ATTEMPTS:
                raise ServiceUnavailable(
                    StatusCode.UNAVAILABLE,
                    f"the result of job {job_id} stopped arriving at byte {assembler.received}",
                )
        return assembler.value()

    def run(
        self,
        function: str,
        *args: Any,
        scheduler: str | None = None,
        timeout: float | None = None,
        job_name: str | None = None,
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
            job_name: A label for the job's record (``jobs`` lists it), at
                most 256 characters.
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
        return (yield from self._run_spec(spec, timeout, f"{function}()", job_name))

    def compute(
        self,
        *args: Any,
        scheduler: str | None = None,
        timeout: float | None = None,
        traverse: bool = True,
        job_name: str | None = None,
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
            job_name: A label for the job's record, at most 256 characters.

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
        return repack((yield from self._run_spec(spec, timeout, "compute", job_name)))

    def get(
        self,
        dsk: Any,
        keys: Any,
        *,
        scheduler: str | None = None,
        timeout: float | None = None,
        job_name: str | None = None,
        **kwargs: Any,
    ) -> Op[Any]:
        """Compute ``keys`` of a task graph on the service: a Dask scheduler function.

        ``x.compute(scheduler=client.get)`` computes ``x`` here, as
        ``x.compute(scheduler=dask.threaded.get)`` would locally. The service
        gives each job's graph keys of its own on the cluster, so two jobs
        that both name a key "x" never see each other's data.

        Args:
            dsk: A task graph (dict or ``HighLevelGraph``) or the expression
                modern Dask passes to schedulers.
            keys: A key or a (nested) list of keys.
            scheduler: The service's scheduler; ``None`` is the server's default.
            timeout: Seconds to wait, as in :meth:`compute`.
            job_name: A label for the job's record, at most 256 characters.
            **kwargs: Other scheduler options Dask passes; ignored.

        Returns:
            The values of ``keys``, shaped like ``keys``.
        """
        yield from self._check_versions()
        spec = _convert.graph_spec((_dask.graph(dsk), keys), scheduler)
        return (yield from self._run_spec(spec, timeout, "get", job_name))

    # -- jobs ----------------------------------------------------------------

    def submit(
        self,
        func: Callable[..., Any],
        *args: Any,
        scheduler: str | None = None,
        job_name: str | None = None,
        job_timeout: float | None = None,
        retryable: bool = False,
        **kwargs: Any,
    ) -> Op[Any]:
        """Send ``func(*args, **kwargs)`` to run on the service, without waiting.

        ``func`` and its arguments are cloudpickled: a function defined in
        ``__main__`` travels by value, one from an installed module by
        reference (the module must be installed on the server and workers).
        As with ``distributed.Client.submit``'s ``key`` and ``pure``, the
        keyword arguments named below are the job's, not ``func``'s; their
        ``job_`` prefix keeps common argument names such as ``timeout`` free
        for ``func``.

        Args:
            func: Any picklable callable.
            *args: Its positional arguments.
            scheduler: "distributed", "threads", "processes" or "synchronous";
                ``None`` is the server's default.
            job_name: A label for the job's record (``jobs`` lists it), at
                most 256 characters.
            job_timeout: The most seconds the job may run; past them the
                server cancels it and it fails with a timeout reason. ``None``
                is the server's limit (larger values are capped to it).
            retryable: Whether the job may run again from the start if the
                service restarts before it finishes (otherwise it fails).
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
        _convert.job_options(spec, job_name, job_timeout, retryable)
        response = yield Call("SubmitJob", pb.SubmitJobRequest(job=spec))
        return self._new_job(_convert.job_info(response.job))

    def submit_function(
        self,
        function: str,
        *args: Any,
        scheduler: str | None = None,
        job_name: str | None = None,
        job_timeout: float | None = None,
        retryable: bool = False,
        **kwargs: Any,
    ) -> Op[Any]:
        """Submit a named function call without waiting.

        Args:
            function: The function's name.
            *args: Positional arguments (JSON values).
            scheduler: The scheduler; ``None`` is the server's default.
            job_name: A label for the job's record, at most 256 characters.
            job_timeout: The most seconds the job may run, as in :meth:`submit`.
            retryable: Whether a restart may run the job again, as in :meth:`submit`.
            **kwargs: Keyword arguments (JSON values).

        Returns:
            A :class:`client_sdk.Job` (:class:`client_sdk.AsyncJob` when async).
        """
        spec = _convert.function_call_spec(function, args, kwargs, scheduler)
        _convert.job_options(spec, job_name, job_timeout, retryable)
        response = yield Call("SubmitJob", pb.SubmitJobRequest(job=spec))
        return self._new_job(_convert.job_info(response.job))

    def map(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        *iterables: Iterable[Any],
        scheduler: str | None = None,
        batch_size: int = 1000,
        job_name: str | None = None,
        job_timeout: float | None = None,
        retryable: bool = False,
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
            job_name: A label for every job's record, at most 256 characters.
            job_timeout: The most seconds each job may run, as in :meth:`submit`.
            retryable: Whether a restart may run the jobs again, as in :meth:`submit`.
            **kwargs: Keyword arguments passed to every call.

        Returns:
            One job per call, in order.
        """
        if not 1 <= batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size must be between 1 and {MAX_BATCH}, got {batch_size}")
        options = _convert.job_options(pb.JobSpec(), job_name, job_timeout, retryable)
        yield from self._check_versions()
        jobs = []
        calls = iter(zip(iterable, *iterables, strict=False))
        while batch := _next_batch(calls, func, kwargs, scheduler, batch_size, options):
            response = yield Call("SubmitJobs", pb.SubmitJobsRequest(jobs=batch))
            jobs.extend(self._new_jobs([_convert.job_info(j) for j in response.jobs]))
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
        return self._new_job(info, owned=False)

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
        info, _ = yield from self._long_poll(job_id, timeout)
        if not info.state.finished:
            raise JobTimeout(
                f"job {job_id} did not finish within {timeout:g}s ({info.state.value})"
            )
        return info

    def _long_poll(self, job_id: str, timeout: float | None) -> Op[tuple[JobInfo, Any]]:
        # WaitJob calls of at most LONG_POLL seconds each, until the job
        # finishes or `timeout` passes: every call has a deadline.
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

    def _watch(self, job_id: str) -> Op[tuple[JobInfo, Any, BaseException | None]]:
        # Until the job finishes; then its value (or StreamedResult) or exception.
        # The server keeps the result (others may attach to the job with
        # client.job(id)) until its TTL or Job.release().
        info, result = yield from self._long_poll(job_id, None)
        value, error = yield from self._settled(info, result, fetch=False)
        return info, value, error

    def _watch_group(self, pending: dict[str, Any]) -> Op[None]:
        # Settle many jobs (a map's batch) with WaitJobs long polls: each
        # answers with every job finished by then, results fetched together.
        # Settled jobs leave `pending`; what is left there when this raises
        # is for the caller to fail.
        while pending:
            request = pb.WaitJobsRequest(job_ids=list(pending))
            request.timeout.FromNanoseconds(int(LONG_POLL * 1e9))
            response = yield Call("WaitJobs", request, LONG_POLL + self.timeout)
            for entry in response.jobs:
                info = _convert.job_info(entry.job)
                job = pending.pop(info.job_id, None)
                if job is None:
                    continue
                if info.state is JobState.SUCCEEDED and not entry.HasField("result"):
                    job._settle(
                        info,
                        None,
                        NotFound(
                            StatusCode.NOT_FOUND,
                            f"the result of job {info.job_id} is gone (released, or expired)",
                        ),
                    )
                    continue
                result = entry.result if entry.HasField("result") else None
                value, error = yield from self._settled(info, result, fetch=False)
                job._settle(info, value, error)

    def scatter(self, value: Any) -> Op[ObjectRef]:
        """Upload ``value`` once; jobs then take the returned reference in its place.

        The value is cloudpickled (NumPy and Arrow buffers out of band) and
        named by the SHA-256 of those bytes. If the server already holds it,
        nothing is sent; otherwise it is streamed in chunks, checked on
        arrival, and loaded on the cluster (never in the server process).

        Args:
            value: Any picklable value (an array, a DataFrame, a model...).

        Returns:
            An :class:`client_sdk.ObjectRef` for ``submit``, ``map``, ``run``
            and Dask work.

        Raises:
            VersionMismatch: This side cannot send pickled data to the server.
            PermissionDenied: The caller lacks the 'code' permission.
            ResourceExhausted: Larger than the server accepts.
        """
        yield from self._check_versions()
        data, sizes, sha = _pickle.encode_object_pieces(value)
        object_id = f"sha256:{sha}"
        try:
            held = yield Call("GetObject", pb.GetObjectRequest(object_id=object_id))
            return ObjectRef(held.object.object_id, held.object.size_bytes)
        except NotFound:
            pass

        def messages() -> Iterator[pb.PutObjectRequest]:
            header = pb.ObjectHeader(sha256=sha, size_bytes=len(data), segment_sizes=sizes)
            yield pb.PutObjectRequest(header=header)
            for start in range(0, len(data), UPLOAD_CHUNK):
                yield pb.PutObjectRequest(chunk=data[start : start + UPLOAD_CHUNK])

        response = yield Call("PutObject", messages(), UPLOAD_DEADLINE)
        return ObjectRef(response.object.object_id, response.object.size_bytes)

    def delete_object(self, ref: ObjectRef) -> Op[bool]:
        """Free an uploaded object on the server now; returns whether it was held."""
        response = yield Call("DeleteObject", pb.DeleteObjectRequest(object_id=ref.object_id))
        return response.deleted

    def release(self, job_id: str) -> Op[bool]:
        """Free a finished job's result on the server now, rather than when it expires.

        A job this client submitted releases a result too large to come inline
        once it has downloaded it (at the first ``result()``); other results
        stay until the server's result TTL unless released here.

        Returns:
            Whether there was a result to free.
        """
        response = yield Call("ReleaseJob", pb.ReleaseJobRequest(job_id=job_id))
        return response.released

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

    def list_jobs(
        self,
        states: Iterable[JobState | str] = (),
        *,
        limit: int | None = None,
        page_size: int = 100,
    ) -> JobPages:
        """Job records, newest first, fetched page by page as you iterate.

        An iterator on the blocking client, an asynchronous one (``async
        for``) on the asynchronous client.

        Args:
            states: Only jobs in these states (names or :class:`JobState`);
                empty lists every job.
            limit: Stop after this many records; ``None`` lists them all.
            page_size: Records per call, 1 to 1000 (default 100).
        """
        return JobPages(states, limit, page_size)


def _next_batch(
    calls: Iterable[tuple[Any, ...]],
    func: Callable[..., Any],
    kwargs: dict[str, Any],
    scheduler: str | None,
    size: int,
    options: pb.JobSpec | None = None,
) -> list[pb.JobSpec]:
    batch: list[pb.JobSpec] = []
    total = 0
    for args in itertools.islice(calls, size):
        spec = _convert.pickled_call_spec(func, args, kwargs, scheduler)
        if options is not None:
            spec.MergeFrom(options)  # the batch's name, time limit and retry policy
        batch.append(spec)
        total += len(spec.pickled_call.payload)
        if total >= MAX_BATCH_BYTES:
            break
    return batch


class JobPages:
    """``ListJobs`` page by page, newest first, stopping at ``limit`` records.

    Each client iterates it its own way: ``next_page()`` is the operation that
    fetches the next page, ``None`` once there is none.
    """

    def __init__(self, states: Iterable[JobState | str], limit: int | None, page_size: int) -> None:
        self.states = _convert.job_states(list(states))
        self.limit = limit
        self.page_size = page_size
        self._token = ""
        self._count = 0
        self._done = limit is not None and limit <= 0

    def next_page(self) -> Op[list[JobInfo]] | None:
        """The operation fetching the next page, or ``None`` after the last."""
        return None if self._done else self._page()

    def _page(self) -> Op[list[JobInfo]]:
        request = pb.ListJobsRequest(
            states=self.states, page_size=self.page_size, page_token=self._token
        )
        response = yield Call("ListJobs", request)
        jobs = [_convert.job_info(message) for message in response.jobs]
        if self.limit is not None:
            jobs = jobs[: self.limit - self._count]
        self._count += len(jobs)
        self._token = response.next_page_token
        self._done = not self._token or (self.limit is not None and self._count >= self.limit)
        return jobs


class Watching:
    """The logic of watching one job with ``WatchJob``, for both clients.

    A client opens the stream :meth:`next_call` asks for, hands each message
    to :meth:`seen` (yielding what it returns), and calls :meth:`ended` when
    the stream ends or :meth:`failed` when it breaks; then asks again. A watch
    outlasting one stream's deadline (:data:`WATCH_STREAM`), or cut off by an
    unavailable server, reopens it, and the server's first message on the new
    stream repeats the job's current state, which is not reported twice.
    """

    def __init__(self, job_id: str, timeout: float | None) -> None:
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.job_id = job_id
        self.timeout = timeout
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._last: JobUpdate | None = None
        self._idle = 0
        self._fresh = False

    def next_call(self) -> tuple[pb.WatchJobRequest, float] | None:
        """The request and deadline of the next stream; ``None`` once the job finished.

        Raises:
            JobTimeout: The watch's ``timeout`` has passed.
        """
        if self._last is not None and self._last.job.state.finished:
            return None
        step = WATCH_STREAM
        if self._deadline is not None:
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                raise self._timed_out()
            step = min(step, remaining)
        self._fresh = False
        return pb.WatchJobRequest(job_id=self.job_id), step

    def seen(self, message: pb.WatchJobResponse) -> JobUpdate | None:
        """The update a message brings, or ``None`` if it repeats the last one."""
        update = _convert.job_update(message)
        self._fresh = True
        if update == self._last:
            return None
        self._last = update
        return update

    def ended(self) -> None:
        """The stream ended; a stream that ends with nothing, again and again, is an error."""
        if self._fresh:
            self._idle = 0
            return
        self._idle += 1
        if self._idle >= RESULT_STREAM_ATTEMPTS:
            raise ServiceUnavailable(
                StatusCode.UNAVAILABLE,
                f"watching job {self.job_id}: the server ended {self._idle} streams in a row "
                "without a word",
            )

    def failed(self, error: BaseException) -> None:
        """The stream broke with ``error``: reopen it (return) or raise.

        Raises:
            JobTimeout: The watch's own ``timeout`` passed.
            ServiceUnavailable: The server stayed unavailable.
            ComputeError: Any other error (for example, no such job).
        """
        if isinstance(error, DeadlineExceeded):
            if self._deadline is not None and time.monotonic() >= self._deadline - 0.001:
                raise self._timed_out() from error
            return  # one stream's deadline, not the watch's: reopen
        if isinstance(error, ServiceUnavailable):
            self._idle = 0 if self._fresh else self._idle + 1
            if self._idle < RESULT_STREAM_ATTEMPTS:
                return
        raise error

    def _timed_out(self) -> JobTimeout:
        state = self._last.job.state.value if self._last is not None else "unknown"
        return JobTimeout(
            f"job {self.job_id} did not finish within {self.timeout:g}s ({state}); it goes on"
        )
