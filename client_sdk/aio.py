"""The asynchronous Python client, on ``grpc.aio``.

:class:`AsyncComputeClient` has the methods of :class:`client_sdk.ComputeClient`
as coroutines; both run the same operations (:mod:`client_sdk._ops`). Dask's
``compute`` is synchronous, so ``as_default`` and using ``get`` as a Dask
scheduler function exist only on the blocking client; ``await client.get(dsk,
keys)`` and ``await client.compute(x)`` work here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

import grpc

from client_sdk import _channel, _convert
from client_sdk._ops import ClientBase, Watching
from client_sdk._proto.compute.v1 import compute_pb2_grpc as pb_grpc
from client_sdk._sansio import Op, Step, Stream, advance, async_pages, coroutine
from client_sdk.errors import ComputeError, JobTimeout
from client_sdk.job import JobBase, JobLink
from client_sdk.types import JobInfo, JobState, JobUpdate, Progress

if TYPE_CHECKING:  # (3.10 has no typing.Self)
    from typing_extensions import Self

logger = logging.getLogger(__name__)

#: Most WaitJob long polls a client keeps open at once; further jobs queue.
WATCH_WINDOW = 1000


class AsyncComputeClient(ClientBase):
    """An asynchronous connection to a Dask Compute Service.

    Takes the same arguments as :class:`client_sdk.ComputeClient`; create it
    inside a running event loop, best with ``async with``.

    Example::

        async with AsyncComputeClient("127.0.0.1:50051") as client:
            await client.run("add", 2, 3)              # 5
            job = await client.submit(sum, [1, 2, 3])
            await job                                  # 6
            values = await client.gather(await client.map(abs, [-1, -2]))
    """

    def _open(self) -> None:
        options = _channel.channel_options()
        if self._credentials is None:
            self._channel = grpc.aio.insecure_channel(self.target, options=options)
        else:
            self._channel = grpc.aio.secure_channel(self.target, self._credentials, options=options)
        self._stub = pb_grpc.ComputeServiceStub(self._channel)
        self._window: asyncio.Semaphore | None = None
        self._watchers: dict[asyncio.Task[Any], AsyncJob] = {}
        self._group_watchers: dict[asyncio.Task[Any], dict[str, AsyncJob]] = {}
        self._closed = False
        # Done-callbacks run from the event loop, as asyncio's own do.
        self._link = JobLink(self._drive, self.watch, _call_now)

    # Each stands in for the operation of its name and returns its value: where

    # that is not Any, the override's type is not the base's generator ([assignment]).
    info = coroutine(ClientBase.info)  # type: ignore[assignment]
    functions = coroutine(ClientBase.functions)  # type: ignore[assignment]
    run = coroutine(ClientBase.run)  # type: ignore[assignment]
    compute = coroutine(ClientBase.compute)  # type: ignore[assignment]
    get = coroutine(ClientBase.get)  # type: ignore[assignment]
    submit = coroutine(ClientBase.submit)  # type: ignore[assignment]
    submit_function = coroutine(ClientBase.submit_function)  # type: ignore[assignment]
    map = coroutine(ClientBase.map)  # type: ignore[assignment]
    get_job = coroutine(ClientBase.get_job)  # type: ignore[assignment]
    job = coroutine(ClientBase.job)  # type: ignore[assignment]
    wait = coroutine(ClientBase.wait)  # type: ignore[assignment]
    cancel = coroutine(ClientBase.cancel)  # type: ignore[assignment]
    release = coroutine(ClientBase.release)  # type: ignore[assignment]
    scatter = coroutine(ClientBase.scatter)  # type: ignore[assignment]
    delete_object = coroutine(ClientBase.delete_object)  # type: ignore[assignment]

    async def gather(
        self, jobs: AsyncJob | Iterable[AsyncJob], timeout: float | None = None
    ) -> Any:
        """Wait for jobs and return their values, as :meth:`client_sdk.ComputeClient.gather`."""
        if isinstance(jobs, AsyncJob):
            return await jobs.result(timeout)
        return [await job.result(timeout) for job in jobs]

    # (An iterator over the pages of the base's JobPages: [assignment], as above.)
    list_jobs = async_pages(ClientBase.list_jobs)  # type: ignore[assignment]

    async def watch(self, job_id: str, timeout: float | None = None) -> AsyncIterator[JobUpdate]:
        """Follow a job as it runs (``async for``), as :meth:`client_sdk.ComputeClient.watch`.

        Raises:
            JobTimeout: ``timeout`` passed before the job finished; it goes on.
            JobNotFound: No such job.
        """
        watching = Watching(job_id, timeout)
        while (call := watching.next_call()) is not None:
            if self._closed:
                raise ComputeError("WatchJob: the client is closed")
            request, deadline = call
            stream = self._stub.WatchJob(request, timeout=deadline, metadata=self._metadata)
            try:
                async for message in stream:
                    update = watching.seen(message)
                    if update is not None:
                        yield update
                watching.ended()
            except grpc.RpcError as err:
                watching.failed(_channel.error_from_rpc(err))
            finally:
                stream.cancel()

    async def close(self) -> None:
        """Stop watching jobs and close the channel."""
        if self._closed:
            return
        self._closed = True
        watched = dict(self._watchers)
        groups = dict(self._group_watchers)
        for task in [*watched, *groups]:
            task.cancel()
        await asyncio.gather(*watched, *groups, return_exceptions=True)
        left = [job for group in groups.values() for job in group.values()]
        for job in [*watched.values(), *left]:  # also those whose watch had not started
            job._lose(_closed_error(job))
        await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        # No call can be made from __repr__: show what info() saw last.
        return self._describe(self._cluster)

    # -- the call layer --------------------------------------------------------

    async def _drive(self, op: Op[Any]) -> Any:
        reply, error = None, None
        while True:
            finished, step = advance(op, reply, error)
            if finished:
                return step
            try:
                reply, error = await self._invoke(step), None
            except ComputeError as exc:
                reply, error = None, exc

    async def _invoke(self, call: Step) -> Any:
        if self._closed:
            raise ComputeError(f"{call.method}: the client is closed")
        timeout = call.timeout or self.timeout
        start = time.perf_counter()
        try:
            pending = getattr(self._stub, call.method)(
                call.request, timeout=timeout, metadata=self._metadata
            )
            if isinstance(call, Stream):
                async for message in pending:
                    call.sink(message)
                response = None
            else:
                response = await pending
        except grpc.RpcError as err:
            logger.debug("%s failed with %s after %.1f ms", call.method, err.code(), _ms(start))
            unreachable = ""
            if err.code() is grpc.StatusCode.DEADLINE_EXCEEDED:
                state = self._channel.get_state(try_to_connect=False)
                if _channel.not_connected(state):
                    unreachable = (
                        f"no connection to {self.target} within {timeout:g}s ({state.name})"
                    )
            raise _channel.error_from_rpc(err, unreachable) from err
        logger.debug("%s OK in %.1f ms", call.method, _ms(start))
        return response

    # -- watching jobs -----------------------------------------------------------

    def _new_job(self, info: JobInfo, owned: bool = True, trust: bool = False) -> AsyncJob:
        job = AsyncJob(self._link, info, owned, trust)
        if info.state.finished and info.state is not JobState.SUCCEEDED:
            job._settle(info, None, _convert.job_exception(info, trusted=job.trusted))
        elif self._closed:
            job._lose(_closed_error(job))
        else:
            task = asyncio.get_running_loop().create_task(self._follow(job))
            self._watchers[task] = job
            task.add_done_callback(self._forget)
        return job

    def _new_jobs(self, infos: list[JobInfo]) -> list[AsyncJob]:
        jobs = [AsyncJob(self._link, info) for info in infos]
        pending: dict[str, AsyncJob] = {}
        for job, info in zip(jobs, infos, strict=True):
            if info.state.finished and info.state is not JobState.SUCCEEDED:
                job._settle(info, None, _convert.job_exception(info, trusted=job.trusted))
            elif self._closed:
                job._lose(_closed_error(job))
            else:
                pending[job.job_id] = job
        if pending:
            task = asyncio.get_running_loop().create_task(self._follow_group(pending))
            self._group_watchers[task] = pending
            task.add_done_callback(self._forget)
        return jobs

    async def _follow_group(self, pending: dict[str, AsyncJob]) -> None:
        try:
            await self._drive(self._watch_group(pending))
        except Exception as exc:  # whatever happens, no job must hang
            for job in list(pending.values()):
                job._lose(exc)

    async def _follow(self, job: AsyncJob) -> None:
        if self._window is None:
            self._window = asyncio.Semaphore(WATCH_WINDOW)
        try:
            async with self._window:
                outcome = await self._drive(self._watch(job.job_id, job.trusted))
        except Exception as exc:  # whatever happens, the job must not hang
            job._lose(exc)
        else:
            job._settle(*outcome)

    def _forget(self, task: asyncio.Task[Any]) -> None:
        self._watchers.pop(task, None)
        self._group_watchers.pop(task, None)


class AsyncJob(JobBase):
    """A submitted job on the asynchronous client; ``await job`` gives its value.

    Mirrors :class:`asyncio.Future`: ``done()``, ``cancelled()`` and
    ``add_done_callback()`` answer from local state; ``result()``,
    ``exception()``, ``cancel()``, ``running()``, ``state()`` and ``info()``
    are coroutines; ``status`` is Dask's string, from local state.

    Attributes:
        job_id: The job's id on the service.
    """

    def __init__(
        self, link: JobLink, info: JobInfo, owned: bool = True, trust: bool = False
    ) -> None:
        super().__init__(link, info, owned, trust)
        self._future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._download_lock = asyncio.Lock()

    # Each stands in for the operation of its name and returns its value: where

    # that is not Any, the override's type is not the base's generator ([assignment]).
    info = coroutine(JobBase.info)  # type: ignore[assignment]
    state = coroutine(JobBase.state)  # type: ignore[assignment]
    running = coroutine(JobBase.running)  # type: ignore[assignment]
    cancel = coroutine(JobBase.cancel)  # type: ignore[assignment]
    release = coroutine(JobBase.release)  # type: ignore[assignment]

    def done(self) -> bool:
        """Whether the job has finished (succeeded, failed or was cancelled)."""
        return self._future.done()

    def cancelled(self) -> bool:
        """Whether the job was cancelled."""
        return self._future.cancelled()

    async def result(self, timeout: float | None = None) -> Any:
        """Wait for the job and return its value, as :meth:`client_sdk.Job.result`.

        Raises:
            JobTimeout: ``timeout`` seconds passed first; the job goes on.
            JobCancelled: The job was cancelled.
        """
        await self._wait(timeout)
        async with self._download_lock:  # a large result comes once, when first asked for
            return await self._drive(self._download(self._future.result()))

    async def exception(self, timeout: float | None = None) -> BaseException | None:
        """The exception the job raised, or ``None``, as :meth:`client_sdk.Job.exception`."""
        await self._wait(timeout)
        return self._future.exception()

    async def progress(self) -> Progress:
        """The job's tasks done out of total now, as :meth:`client_sdk.Job.progress`."""
        update: JobUpdate
        async for update in self._link.watch(self.job_id, None):
            return update.progress
        raise ComputeError(f"WatchJob: no report on job {self.job_id}")  # pragma: no cover

    def watch(self, timeout: float | None = None) -> AsyncIterator[JobUpdate]:
        """Follow the job (``async for``), as :meth:`AsyncComputeClient.watch`."""
        return cast("AsyncIterator[JobUpdate]", self._link.watch(self.job_id, timeout))

    def add_done_callback(self, fn: Callable[[AsyncJob], object]) -> None:
        """Call ``fn(job)`` once, when the job finishes, from the event loop."""
        self._future.add_done_callback(lambda _: self._link.dispatch(fn, self))

    def __await__(self) -> Any:
        return self.result().__await__()

    async def _wait(self, timeout: float | None) -> None:
        # asyncio.wait neither raises the job's own exception nor cancels the
        # future when the time is up.
        await asyncio.wait({self._future}, timeout=timeout)
        if not self._future.done():
            raise JobTimeout(f"job {self.job_id} did not finish within {timeout:g}s; it goes on")
        if self._future.cancelled():
            raise _convert.job_exception(self._info, trusted=self.trusted)

    def _settle(self, info: JobInfo, value: Any, error: BaseException | None) -> None:
        if self._future.done():
            return
        self._info = info
        if info.state is JobState.CANCELLED:
            self._future.cancel()
        elif error is None:
            self._future.set_result(value)
        else:
            self._fail(error)

    def _lose(self, error: BaseException) -> None:
        if not self._future.done():
            self._fail(error)

    def _fail(self, error: BaseException) -> None:
        self._future.set_exception(error)
        # A job nobody awaits may fail: that is the caller's business, not
        # asyncio's "exception was never retrieved" log.
        self._future.exception()


def _call_now(fn: Callable[[AsyncJob], object], job: AsyncJob) -> None:
    fn(job)


def _closed_error(job: AsyncJob) -> ComputeError:
    return ComputeError(
        f"the client was closed before job {job.job_id} finished; the job may still "
        "be running on the server (watch it with a new client's job())"
    )


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000
