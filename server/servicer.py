"""The gRPC servicer: translates requests for :class:`server.core.ComputeCore` and back.

Each RPC converts its request, calls one core method and converts the result.
:func:`_translate_errors` answers each call through the servicer's
:class:`server.status.Answers`, the one place that chooses status codes and
counts calls: :mod:`server.errors` map to their codes; anything unexpected
is logged with its traceback and answered ``INTERNAL`` with a fixed message,
never with the exception's text.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk._proto.compute.v1 import compute_pb2_grpc as pb_grpc
from server import convert, status
from server.auth import current_caller
from server.core import ComputeCore
from server.errors import InvalidArgument
from server.jobs import JobState
from server.status import Answers

__all__ = ["INSTANCE_KEY", "ComputeServicer"]

logger = logging.getLogger(__name__)

#: Trailing metadata key carrying the server instance's id (new on every start).
#: Trailing, not initial: it then rides with the status, with no extra write.
INSTANCE_KEY = "dask-compute-instance"

#: Largest chunk of a result stream: every message stays under gRPC's usual 4 MiB limit.
MAX_CHUNK_BYTES = 3 * 1024 * 1024

#: Seconds between looks at a watched job's progress (state changes wake it at once).
WATCH_INTERVAL = 0.25
#: Most bytes of inline results in one WaitJobs answer; finished jobs past it come next call.
WAIT_JOBS_RESULT_BYTES = 16 * 1024 * 1024

Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])


def _translate_errors(method: Handler) -> Handler:
    """Wrap a unary handler: status codes for errors, instance metadata, metrics."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async with self.answers.answering(method.__name__, request, context) as answering:
            response = await method(self, request, context)
            answering.sent = response.ByteSize()
            return response

    return wrapper  # type: ignore[return-value]


def _translate_stream_errors(method: Callable[..., AsyncIterator[Any]]) -> Any:
    """Wrap a server-streaming handler the way :func:`_translate_errors` wraps unary ones."""

    @functools.wraps(method)
    async def wrapper(
        self: Any, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        async with self.answers.answering(method.__name__, request, context) as answering:
            async for message in method(self, request, context):
                answering.sent += message.ByteSize()
                yield message

    return wrapper


class ComputeServicer(pb_grpc.ComputeServiceServicer):
    """``compute.v1.ComputeService`` over a :class:`ComputeCore`."""

    def __init__(self, core: ComputeCore) -> None:
        self.core = core
        #: How every call is answered; the caller interceptor answers the
        #: calls it refuses through it too (server.app.build_server hands it over).
        self.answers = Answers(core.metrics, ((INSTANCE_KEY, core.instance_id),))

    async def _job_request(self, spec: pb.JobSpec) -> Any:
        """The core's request from a ``JobSpec`` (see :meth:`_job_requests`)."""
        return (await self._job_requests([spec]))[0]

    async def _job_requests(self, specs: Any) -> list[Any]:
        """The core's requests from ``JobSpec`` messages, with their JSON arguments
        bounded (``--max-argument-values``) and, in a large request, converted on a
        thread: a walk of many thousands of values would hold up every other call
        on the loop (health checks too). The request's size is the one received
        (no walk of the parsed message to learn it)."""
        max_values = self.core.settings.max_argument_values

        def convert_all() -> list[Any]:
            return [convert.job_request(spec, max_values) for spec in specs]

        size = status.RECEIVED_BYTES.get()
        if size is None:  # not through the interceptor: a test's direct call
            size = sum(convert.argument_bytes(spec) for spec in specs)
        if size > convert.LARGE_ARGUMENT_BYTES:
            return await asyncio.to_thread(convert_all)
        return convert_all()

    @_translate_errors
    async def GetClusterInfo(self, request: pb.GetClusterInfoRequest, context: Any) -> Any:
        snapshot = await self.core.cluster_info()
        return pb.GetClusterInfoResponse(
            cluster=convert.cluster(snapshot),
            versions=convert.versions(self.core.versions()),
            schedulers=[convert.SCHEDULER_ENUMS[s] for s in self.core.schedulers()],
            default_scheduler=convert.SCHEDULER_ENUMS[self.core.settings.default_scheduler],
            caller=current_caller().name,
        )

    @_translate_errors
    async def ListFunctions(self, request: pb.ListFunctionsRequest, context: Any) -> Any:
        return pb.ListFunctionsResponse(
            functions=[convert.function(spec) for spec in self.core.functions()]
        )

    @_translate_errors
    async def Run(self, request: pb.RunRequest, context: Any) -> Any:
        caller = current_caller()

        remaining = context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining

        def why_cancelled() -> str:
            # gRPC cancels the handler both when the deadline passes and when
            # the caller goes away; the clock tells which (with slack for the
            # deadline timer firing a little early).
            if deadline is not None and time.monotonic() >= deadline - 0.05:
                return "the deadline of the Run call passed"
            return "the caller of Run went away"

        record = await self.core.run(
            await self._job_request(request.job), caller, why_cancelled, release=request.release
        )
        response = pb.RunResponse(
            job=convert.job(record), cluster=convert.cluster(self.core.cluster_snapshot())
        )
        if record.state is JobState.SUCCEEDED:
            encoded = await self.core.result(record.job_id, caller=caller)
            response.result.CopyFrom(convert.result(encoded))
            if request.release and not encoded.streamed:
                response.job.result_available = False
                await self.core.release(record.job_id, caller)
        return response

    @_translate_errors
    async def SubmitJob(self, request: pb.SubmitJobRequest, context: Any) -> Any:
        record = await self.core.submit(await self._job_request(request.job), current_caller())
        return pb.SubmitJobResponse(job=convert.job(record))

    @_translate_errors
    async def SubmitJobs(self, request: pb.SubmitJobsRequest, context: Any) -> Any:
        records = await self.core.submit_many(
            await self._job_requests(request.jobs), current_caller()
        )
        return pb.SubmitJobsResponse(jobs=[convert.job(r) for r in records])

    @_translate_errors
    async def GetJob(self, request: pb.GetJobRequest, context: Any) -> Any:
        return pb.GetJobResponse(
            job=convert.job(await self.core.get_job(request.job_id, current_caller()))
        )

    @_translate_errors
    async def WaitJob(self, request: pb.WaitJobRequest, context: Any) -> Any:
        timeout = convert.timeout(request.timeout) if request.HasField("timeout") else None
        fmt = convert.result_format(request.result_format)
        caller = current_caller()
        record, timed_out = await self.core.wait_job(request.job_id, timeout, caller)
        response = pb.WaitJobResponse(job=convert.job(record), timed_out=timed_out)
        if record.state is JobState.SUCCEEDED:
            encoded = await self.core.result(record.job_id, fmt, caller)
            response.result.CopyFrom(convert.result(encoded))
            if request.release and not encoded.streamed:
                response.job.result_available = False
                await self.core.release(record.job_id, caller)
        return response

    @_translate_errors
    async def WaitJobs(self, request: pb.WaitJobsRequest, context: Any) -> Any:
        timeout = convert.timeout(request.timeout) if request.HasField("timeout") else None
        fmt = convert.result_format(request.result_format)
        caller = current_caller()
        records, timed_out = await self.core.wait_jobs(list(request.job_ids), timeout, caller)
        succeeded = [r.job_id for r in records if r.state is JobState.SUCCEEDED]
        budget = min(WAIT_JOBS_RESULT_BYTES, self.core.settings.max_message_bytes // 2)
        # The budget first: only the results that fit are fetched and encoded
        # (a prefix of the succeeded jobs); the jobs past them come next call.
        fetched = await self.core.held.results(succeeded, fmt, caller, budget=budget)
        encoded = dict(zip(succeeded, fetched, strict=False))
        left_out = set(succeeded[len(fetched) :])
        response = pb.WaitJobsResponse(timed_out=timed_out)
        for record in records:
            if record.job_id in left_out:
                break  # the rest come with the next call, at once
            result = encoded.get(record.job_id)
            size = 0 if result is None or result.streamed else result.size_bytes
            if size > budget and response.jobs:
                break  # the rest come with the next call, at once
            budget -= size
            entry = response.jobs.add(job=convert.job(record))
            if result is None:
                if record.state is JobState.SUCCEEDED:
                    entry.job.result_available = False
                continue
            entry.result.CopyFrom(convert.result(result))
            if request.release and not result.streamed:
                entry.job.result_available = False
                await self.core.release(record.job_id, caller)
        return response

    @_translate_errors
    async def CancelJob(self, request: pb.CancelJobRequest, context: Any) -> Any:
        record, cancelled = await self.core.cancel_job(
            request.job_id, request.reason[:1024], current_caller()
        )
        return pb.CancelJobResponse(job=convert.job(record), cancelled=cancelled)

    @_translate_errors
    async def ListJobs(self, request: pb.ListJobsRequest, context: Any) -> Any:
        records, token = await self.core.list_jobs(
            convert.states(request.states), request.page_size, request.page_token, current_caller()
        )
        return pb.ListJobsResponse(jobs=[convert.job(r) for r in records], next_page_token=token)

    @_translate_stream_errors
    async def GetJobResult(
        self, request: pb.GetJobResultRequest, context: Any
    ) -> AsyncIterator[Any]:
        caller = current_caller()
        chunk_size = request.chunk_size or self.core.settings.result_chunk_bytes
        if not 1024 <= chunk_size <= MAX_CHUNK_BYTES:
            raise InvalidArgument(
                f"chunk_size must be between 1024 and {MAX_CHUNK_BYTES}",
                field="chunk_size",
                reason="INVALID_CHUNK_SIZE",
                metadata={"limit": MAX_CHUNK_BYTES},
            )
        fmt = convert.result_format(request.result_format)
        last = request.checksum_last
        stream = await self.core.open_result(request.job_id, fmt, caller, checksum=not last)
        close = stream.closer()
        if not 0 <= request.offset <= stream.total_size:
            close()
            raise InvalidArgument(
                f"offset {request.offset} is outside the result's {stream.total_size} bytes",
                field="offset",
                reason="OFFSET_OUT_OF_RANGE",
                metadata={"total_size": stream.total_size},
            )
        # With checksum_last the whole stream (from byte 0) is hashed while the
        # chunks go out (here in a thread, or by the worker that holds it),
        # and its SHA-256 comes last.
        digest = asyncio.ensure_future(stream.digest()) if last else None
        try:
            yield pb.GetJobResultResponse(header=convert.result_header(stream, request.offset))
            async for chunk in stream.achunks(request.offset, chunk_size):
                yield pb.GetJobResultResponse(chunk=bytes(chunk))
            del stream  # the server keeps no copy once it is sent
            if digest is not None:
                yield pb.GetJobResultResponse(trailer=pb.ResultTrailer(sha256=await digest))
        finally:
            if digest is not None:
                digest.cancel()  # a stream cut off: nobody waits for the hash
            close()
        if request.release:
            await self.core.release(request.job_id, caller)

    @_translate_errors
    async def PutObject(self, request_iterator: AsyncIterator[Any], context: Any) -> Any:
        first = await anext(request_iterator, None)
        if first is None or first.WhichOneof("part") != "header":
            raise InvalidArgument(
                "an upload starts with its header, then sends chunks",
                field="header",
                reason="UPLOAD_HEADER_REQUIRED",
            )
        header = first.header
        if header.serializer not in (pb.SERIALIZER_UNSPECIFIED, pb.SERIALIZER_CLOUDPICKLE):
            raise InvalidArgument(
                f"serializer {header.serializer} is not supported",
                field="header.serializer",
                reason="UNSUPPORTED_SERIALIZER",
            )

        async def chunks() -> AsyncIterator[bytes]:
            async for message in request_iterator:
                if message.WhichOneof("part") != "chunk":
                    raise InvalidArgument(
                        "only the first message of an upload is a header",
                        field="header",
                        reason="UPLOAD_HEADER_REPEATED",
                    )
                chunk = message.chunk  # read once: each read of a bytes field copies it
                self.core.metrics.bytes_in.labels("PutObject").inc(len(chunk))
                yield chunk

        stored, existed = await self.core.put_object(
            current_caller(), header.sha256, header.size_bytes, list(header.segment_sizes), chunks()
        )
        return pb.PutObjectResponse(object=convert.object_ref(stored), existed=existed)

    @_translate_errors
    async def GetObject(self, request: pb.GetObjectRequest, context: Any) -> Any:
        stored = await self.core.get_object(request.object_id, current_caller())
        return pb.GetObjectResponse(object=convert.object_ref(stored))

    @_translate_errors
    async def DeleteObject(self, request: pb.DeleteObjectRequest, context: Any) -> Any:
        deleted = await self.core.delete_object(request.object_id, current_caller())
        return pb.DeleteObjectResponse(deleted=deleted)

    @_translate_errors
    async def ReleaseJob(self, request: pb.ReleaseJobRequest, context: Any) -> Any:
        record, released = await self.core.release(request.job_id, current_caller())
        return pb.ReleaseJobResponse(job=convert.job(record), released=released)

    @_translate_stream_errors
    async def WatchJob(self, request: pb.WatchJobRequest, context: Any) -> AsyncIterator[Any]:
        caller = current_caller()
        last = None
        while True:
            done, total = await self.core.progress(request.job_id, caller)
            record = await self.core.get_job(request.job_id, caller)
            now = (record.state, record.result_available, done, total)
            if now != last:
                last = now
                yield pb.WatchJobResponse(
                    job=convert.job(record),
                    progress=pb.Progress(tasks_done=done, tasks_total=total),
                )
            if record.state.finished:
                return
            await self.core.wait_job(request.job_id, WATCH_INTERVAL, caller)
