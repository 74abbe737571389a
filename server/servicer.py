"""The gRPC servicer: translates requests for :class:`server.core.ComputeCore` and back.

Each RPC converts its request, calls one core method and converts the result.
:func:`_translate_errors` maps :mod:`server.errors` to status codes in one place;
anything unexpected is logged with its traceback and answered ``INTERNAL``
with a fixed message, never with the exception's text.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk._proto.compute.v1 import compute_pb2_grpc as pb_grpc
from server import convert
from server.auth import current_caller
from server.core import ComputeCore
from server.errors import ServiceError
from server.jobs import JobState

logger = logging.getLogger(__name__)

#: Trailing metadata key naming the :mod:`server.errors` class of a failed call.
ERROR_KEY = "dask-compute-error"
#: Initial metadata key carrying the server instance's id (new on every start).
INSTANCE_KEY = "dask-compute-instance"

Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])


def _translate_errors(method: Handler) -> Handler:
    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            await context.send_initial_metadata(self.metadata)
            return await method(self, request, context)
        except ServiceError as exc:
            # The error's class name lets clients tell, say, a missing function
            # from a missing job without parsing the message.
            await context.abort(
                getattr(grpc.StatusCode, exc.status),
                str(exc),
                trailing_metadata=((ERROR_KEY, type(exc).__name__),),
            )
        except grpc.aio.AbortError:
            raise
        except Exception:
            incident = uuid.uuid4().hex[:12]
            logger.exception("%s failed unexpectedly (incident %s)", method.__name__, incident)
            await context.abort(
                grpc.StatusCode.INTERNAL,
                f"internal error in {method.__name__} (incident {incident}); "
                "the server log has the details",
            )

    return wrapper  # type: ignore[return-value]


class ComputeServicer(pb_grpc.ComputeServiceServicer):
    """``compute.v1.ComputeService`` over a :class:`ComputeCore`."""

    def __init__(self, core: ComputeCore) -> None:
        self.core = core
        self.metadata = ((INSTANCE_KEY, core.instance_id),)

    @_translate_errors
    async def GetClusterInfo(self, request: pb.GetClusterInfoRequest, context: Any) -> Any:
        snapshot = await self.core.cluster_info()
        return pb.GetClusterInfoResponse(
            cluster=convert.cluster(snapshot),
            versions=convert.versions(self.core.versions()),
            schedulers=[convert.SCHEDULER_ENUMS[s] for s in self.core.schedulers()],
            default_scheduler=convert.SCHEDULER_ENUMS[self.core.settings.default_scheduler],
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

        record = await self.core.run(convert.job_request(request.job), caller, why_cancelled)
        response = pb.RunResponse(
            job=convert.job(record), cluster=convert.cluster(self.core.cluster_snapshot())
        )
        if record.state is JobState.SUCCEEDED:
            encoded = await self.core.result(record.job_id, caller=caller)
            response.result.CopyFrom(convert.result(encoded))
        return response

    @_translate_errors
    async def SubmitJob(self, request: pb.SubmitJobRequest, context: Any) -> Any:
        record = await self.core.submit(convert.job_request(request.job), current_caller())
        return pb.SubmitJobResponse(job=convert.job(record))

    @_translate_errors
    async def SubmitJobs(self, request: pb.SubmitJobsRequest, context: Any) -> Any:
        records = await self.core.submit_many(
            [convert.job_request(j) for j in request.jobs], current_caller()
        )
        return pb.SubmitJobsResponse(jobs=[convert.job(r) for r in records])

    @_translate_errors
    async def GetJob(self, request: pb.GetJobRequest, context: Any) -> Any:
        return pb.GetJobResponse(
            job=convert.job(self.core.get_job(request.job_id, current_caller()))
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
        return response

    @_translate_errors
    async def CancelJob(self, request: pb.CancelJobRequest, context: Any) -> Any:
        record, cancelled = await self.core.cancel_job(
            request.job_id, request.reason[:1024], current_caller()
        )
        return pb.CancelJobResponse(job=convert.job(record), cancelled=cancelled)

    @_translate_errors
    async def ListJobs(self, request: pb.ListJobsRequest, context: Any) -> Any:
        records, token = self.core.list_jobs(
            convert.states(request.states), request.page_size, request.page_token, current_caller()
        )
        return pb.ListJobsResponse(
            jobs=[convert.job(r) for r in records], next_page_token=token
        )
