"""The blocking Python client of the Dask Compute Service.

The operations live in :mod:`client_sdk._ops`; this module only makes their
calls, on a blocking gRPC channel, and watches submitted jobs.
"""

from __future__ import annotations

import collections
import concurrent.futures
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import grpc

from client_sdk import _channel, _convert
from client_sdk._dask import DefaultScheduler
from client_sdk._ops import ClientBase, Watching
from client_sdk._proto.compute.v1 import compute_pb2_grpc as pb_grpc
from client_sdk._sansio import Op, Step, Stream, advance, blocking, pages
from client_sdk.errors import ComputeError
from client_sdk.job import Job, JobLink
from client_sdk.types import JobInfo, JobState, JobUpdate

if TYPE_CHECKING:  # (3.10 has no typing.Self)
    from typing_extensions import Self

logger = logging.getLogger(__name__)

#: Most WaitJob long polls a client keeps open at once; further jobs queue.
WATCH_WINDOW = 1000
#: Threads of the client's pools: done-callbacks run one at a time, in order.
_POOL_SIZES = {"callbacks": 1, "streams": 4}


class ComputeClient(ClientBase):
    """A blocking connection to a Dask Compute Service.

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

    Example::

        with ComputeClient("127.0.0.1:50051") as client:
            print(client)                    # <ComputeClient: 'grpc://...' workers=2 ...>
            client.run("add", 2, 3)          # 5
            job = client.submit(sum, [1, 2, 3], scheduler="threads")
            job.result()                     # 6
            x.compute(scheduler=client.get)  # a Dask collection, computed remotely
    """

    def _open(self) -> None:
        channel_options = _channel.channel_options()
        if self._credentials is None:
            self._channel = grpc.insecure_channel(self.target, options=channel_options)
        else:
            self._channel = grpc.secure_channel(
                self.target, self._credentials, options=channel_options
            )
        self._stub = pb_grpc.ComputeServiceStub(self._channel)
        self._lock = threading.Lock()
        self._watching = 0
        self._queued: collections.deque[Job] = collections.deque()
        self._pools: dict[str, concurrent.futures.ThreadPoolExecutor] = {}
        self._default: DefaultScheduler | None = None
        self._closed = False
        self._link = JobLink(self._drive, self.watch, self._dispatch_callback)

    # Each stands in for the operation of its name and returns its value: where

    # that is not Any, the override's type is not the base's generator ([assignment]).
    info = blocking(ClientBase.info)  # type: ignore[assignment]
    functions = blocking(ClientBase.functions)  # type: ignore[assignment]
    run = blocking(ClientBase.run)
    compute = blocking(ClientBase.compute)
    get = blocking(ClientBase.get)
    submit = blocking(ClientBase.submit)
    submit_function = blocking(ClientBase.submit_function)
    map = blocking(ClientBase.map)  # type: ignore[assignment]
    get_job = blocking(ClientBase.get_job)  # type: ignore[assignment]
    job = blocking(ClientBase.job)
    wait = blocking(ClientBase.wait)  # type: ignore[assignment]
    cancel = blocking(ClientBase.cancel)  # type: ignore[assignment]
    release = blocking(ClientBase.release)  # type: ignore[assignment]
    scatter = blocking(ClientBase.scatter)  # type: ignore[assignment]
    delete_object = blocking(ClientBase.delete_object)  # type: ignore[assignment]

    def gather(self, jobs: Job | Iterable[Job], timeout: float | None = None) -> Any:
        """Wait for jobs and return their values.

        Args:
            jobs: One job, or an iterable of jobs.
            timeout: Seconds to wait for each job; ``None`` waits as long as
                it takes.

        Returns:
            The job's value, or a list of values in the order of ``jobs``.

        Raises:
            Exception: The first error of a job, in order (what its
                :meth:`Job.result` raises).
        """
        if isinstance(jobs, Job):
            return jobs.result(timeout)
        return [job.result(timeout) for job in jobs]

    # (An iterator over the pages of the base's JobPages: [assignment], as above.)
    list_jobs = pages(ClientBase.list_jobs)  # type: ignore[assignment]

    def watch(self, job_id: str, timeout: float | None = None) -> Iterator[JobUpdate]:
        """Follow a job as it runs: its state and progress, as the server reports them.

        The first update is the job as it is now; then one comes whenever its
        state or its tasks done change (at most a few a second), and the last
        one is the job finished. Progress counts the job's Dask tasks, taken
        from its scheduler's own state. Stopping the iteration early closes
        the stream; the job goes on.

        Example::

            for update in client.watch(job.job_id):
                print(update.job.state, update.progress.tasks_done, update.progress.tasks_total)

        Args:
            job_id: The job's id.
            timeout: Seconds to follow it; ``None`` follows it until it finishes.

        Raises:
            JobTimeout: ``timeout`` passed before the job finished; it goes on.
            JobNotFound: No such job.
        """
        watching = Watching(job_id, timeout)
        while (call := watching.next_call()) is not None:
            request, deadline = call
            try:
                stream = self._stub.WatchJob(request, timeout=deadline, metadata=self._metadata)
            except ValueError as exc:  # grpc raises it for calls on a closed channel
                raise ComputeError("WatchJob: the client is closed") from exc
            try:
                for message in stream:
                    update = watching.seen(message)
                    if update is not None:
                        yield update
                watching.ended()
            except grpc.RpcError as err:
                watching.failed(_channel.error_from_rpc(err))
            finally:
                stream.cancel()

    def as_default(self, scheduler: str | None = None) -> DefaultScheduler:
        """Make this client Dask's default scheduler, as creating a ``distributed.Client`` does.

        Afterwards ``x.compute()``, ``dask.compute(x)`` and ``x.persist()``
        run on the service; ``x.compute(scheduler="threads")`` still picks
        Dask's local threads. Use it in a ``with`` block to undo it on exit,
        or call it plainly to keep it until :meth:`close`.

        Args:
            scheduler: The service's scheduler for those computations; ``None``
                is the server's default.

        Returns:
            A context manager whose ``__enter__`` returns this client.
        """
        self._default = DefaultScheduler(self, scheduler)
        return self._default

    def close(self) -> None:
        """Close the channel; unfinished jobs can no longer be watched.

        If this client is Dask's default scheduler (see :meth:`as_default`),
        the previous default comes back.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            queued, self._queued = list(self._queued), collections.deque()
        if self._default is not None and self._default.active:
            self._default.restore()
        for job in queued:
            job._lose(self._closed_error(job))
        self._channel.close()  # ends open long polls, which lose their jobs
        for pool in self._pools.values():
            pool.shutdown(wait=False)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        try:
            info = self._drive(ClientBase.info(self))
        except ComputeError:
            info = None
        return self._describe(info)

    # -- the call layer --------------------------------------------------------

    def _drive(self, op: Op[Any]) -> Any:
        reply, error = None, None
        while True:
            finished, step = advance(op, reply, error)
            if finished:
                return step
            try:
                reply, error = self._invoke(step), None
            except ComputeError as exc:
                reply, error = None, exc

    def _invoke(self, call: Step) -> Any:
        timeout = call.timeout or self.timeout
        start = time.perf_counter()
        try:
            response = getattr(self._stub, call.method)(
                call.request, timeout=timeout, metadata=self._metadata
            )
            if isinstance(call, Stream):
                for message in response:
                    call.sink(message)
                response = None
        except grpc.RpcError as err:
            logger.debug("%s failed with %s after %.1f ms", call.method, err.code(), _ms(start))
            raise _channel.error_from_rpc(err, self._unreachable(err, timeout)) from err
        except ValueError as exc:  # grpc raises it for calls on a closed channel
            raise ComputeError(f"{call.method}: the client is closed") from exc
        logger.debug("%s OK in %.1f ms", call.method, _ms(start))
        return response

    def _unreachable(self, err: grpc.RpcError, timeout: float) -> str:
        # A deadline that passed while the channel never connected means the
        # server is unreachable, which is what the caller needs to hear.
        if err.code() is not grpc.StatusCode.DEADLINE_EXCEEDED:
            return ""
        states: list[grpc.ChannelConnectivity] = []
        seen = threading.Event()

        def record(state: grpc.ChannelConnectivity) -> None:
            states.append(state)
            seen.set()

        self._channel.subscribe(record, try_to_connect=False)
        seen.wait(0.5)
        self._channel.unsubscribe(record)
        if states and _channel.not_connected(states[0]):
            return f"no connection to {self.target} within {timeout:g}s ({states[0].name})"
        return ""

    # -- watching jobs -----------------------------------------------------------

    def _new_job(self, info: JobInfo, owned: bool = True, trust: bool = False) -> Job:
        job = Job(self._link, info, owned, trust)
        if info.state.finished and info.state is not JobState.SUCCEEDED:
            job._settle(info, None, _convert.job_exception(info, trusted=job.trusted))
            return job
        with self._lock:
            if self._closed:
                job._lose(self._closed_error(job))
                return job
            if self._watching >= WATCH_WINDOW:
                self._queued.append(job)
                return job
            self._watching += 1
        self._follow(job)
        return job

    def _new_jobs(self, infos: list[JobInfo]) -> list[Job]:
        jobs = [Job(self._link, info) for info in infos]
        pending: dict[str, Job] = {}
        for job, info in zip(jobs, infos, strict=True):
            if info.state.finished and info.state is not JobState.SUCCEEDED:
                job._settle(info, None, _convert.job_exception(info, trusted=job.trusted))
            else:
                pending[job.job_id] = job
        if not pending:
            return jobs
        with self._lock:
            closed = self._closed
        if closed:
            for job in pending.values():
                job._lose(self._closed_error(job))
        else:
            op = self._watch_group(pending)
            self._advance(op, functools.partial(self._group_followed, pending), None, None)
        return jobs

    def _group_followed(
        self, pending: dict[str, Job], outcome: Any, error: BaseException | None
    ) -> None:
        # The group's watch ended: every job still pending is lost with its error.
        for job in list(pending.values()):
            job._lose(self._closed_error(job) if self._closed or error is None else error)

    def _follow(self, job: Job) -> None:
        op = self._watch(job.job_id, job.trusted)
        self._advance(op, functools.partial(self._followed, job), None, None)

    def _followed(self, job: Job, outcome: Any, error: BaseException | None) -> None:
        if error is not None:
            job._lose(self._closed_error(job) if self._closed else error)
        else:
            job._settle(*outcome)
        with self._lock:
            following = self._queued.popleft() if self._queued else None
            if following is None:
                self._watching -= 1
        if following is not None:
            self._follow(following)

    def _advance(
        self,
        op: Op[Any],
        done: Callable[[Any, BaseException | None], None],
        reply: Any,
        error: BaseException | None,
    ) -> None:
        # Drive `op` without blocking: each unary call is started as a gRPC
        # future whose completion, on gRPC's thread, takes the next step. A
        # stream blocks its reader, so it is read on one of the client's threads.
        try:
            finished, step = advance(op, reply, error)
        except Exception as exc:
            done(None, exc)
            return
        if finished:
            done(step, None)
            return
        if isinstance(step, Stream):
            pool = self._pool("streams")
            if pool is None:
                done(None, ComputeError(f"{step.method}: the client is closed"))
            else:
                pool.submit(self._read_stream, op, done, step)
            return
        try:
            future = getattr(self._stub, step.method).future(
                step.request, timeout=step.timeout or self.timeout, metadata=self._metadata
            )
        except ValueError as exc:  # the channel is closed
            done(None, ComputeError(f"{step.method}: the client is closed ({exc})"))
            return
        future.add_done_callback(functools.partial(self._resume, op, done))

    def _read_stream(
        self, op: Op[Any], done: Callable[[Any, BaseException | None], None], step: Stream
    ) -> None:
        try:
            self._invoke(step)
        except ComputeError as exc:
            self._advance(op, done, None, exc)
        else:
            self._advance(op, done, None, None)

    def _resume(
        self, op: Op[Any], done: Callable[[Any, BaseException | None], None], future: Any
    ) -> None:
        try:
            reply = future.result()
        except grpc.RpcError as err:
            self._advance(op, done, None, _channel.error_from_rpc(err))
        except Exception as exc:  # cancelled when the channel closed
            self._advance(op, done, None, ComputeError(f"the call was abandoned: {exc!r}"))
        else:
            self._advance(op, done, reply, None)

    def _pool(self, name: str) -> concurrent.futures.ThreadPoolExecutor | None:
        # The client's own threads, started when first needed; None once closed.
        with self._lock:
            if self._closed:
                return None
            if name not in self._pools:
                self._pools[name] = concurrent.futures.ThreadPoolExecutor(
                    _POOL_SIZES[name], thread_name_prefix=f"dask-compute-{name}"
                )
            return self._pools[name]

    def _dispatch_callback(self, fn: Callable[[Job], object], job: Job) -> None:
        # Done-callbacks run on one thread of the client's, never on gRPC's:
        # a callback that waits for another job would otherwise stop every
        # watch on the channel.
        pool = self._pool("callbacks")
        if pool is None:
            _call_logged(fn, job)
        else:
            pool.submit(_call_logged, fn, job)

    def _closed_error(self, job: Job) -> ComputeError:
        return ComputeError(
            f"the client was closed before job {job.job_id} finished; the job may still "
            "be running on the server (watch it with a new client's job())"
        )


def _call_logged(fn: Callable[[Job], object], job: Job) -> None:
    try:
        fn(job)
    except Exception:
        logger.exception("exception calling done-callback %r of %r", fn, job)


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000
