"""A finished job's result: what it stands for, downloading it, freeing it on the server.

These operations need nothing of the client that drives them, so a job
(:mod:`client_sdk.job`) runs them itself. A result small enough comes inside
the answer that reports the job finished; a larger one is marked
``streamed`` and read with ``GetJobResult`` streams into a
:class:`client_sdk._results.ResultAssembler`, resumed where a stream was cut off.
"""

from __future__ import annotations

import logging
from typing import Any

from client_sdk import _convert
from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk._results import ResultAssembler, StreamedResult
from client_sdk._sansio import Call, Op, Stream
from client_sdk.errors import DeadlineExceeded, ServiceUnavailable, StatusCode, UntrustedResult
from client_sdk.types import JobInfo, JobState

logger = logging.getLogger(__name__)

#: Deadline of one GetJobResult stream, in seconds; a stream cut off resumes.
RESULT_STREAM_TIMEOUT = 300.0
#: Streams in a row that may fail without a byte of progress before giving up.
RESULT_STREAM_ATTEMPTS = 3


def settled(
    info: JobInfo,
    result: pb.Result | None,
    release: bool = True,
    fetch: bool = True,
    *,
    trusted: bool,
) -> Op[tuple[Any, BaseException | None]]:
    """What a finished job stands for: ``(value, None)`` or ``(None, exception)``.

    Pickles are loaded only when ``trusted`` (see :class:`UntrustedResult`).

    A result too large to come inline is streamed now (and released on the
    server afterwards, when ``release``), or with ``fetch=False`` left there
    as a :class:`StreamedResult` for its job to download when asked.
    """
    try:
        if info.state is JobState.SUCCEEDED and result is not None and result.streamed:
            if not fetch:
                return StreamedResult(info.job_id, result.size_bytes), None
            value = yield from download(info.job_id, release, trusted=trusted, owner=info.owner)
            return value, None
        return _convert.resolve(info, result, trusted=trusted)
    except Exception as exc:  # the result could not be read here
        return None, exc


def download(job_id: str, release: bool, *, trusted: bool, owner: str = "") -> Op[Any]:
    """A streamed result's value, read with ``GetJobResult``.

    A stream cut off is resumed from the last byte received, until
    :data:`RESULT_STREAM_ATTEMPTS` streams in a row bring nothing.

    Args:
        job_id: The job's id.
        release: Free the result on the server once it has been read.

    Raises:
        ServiceUnavailable: The result stopped arriving.
        ComputeError: The bytes do not match their SHA-256.
    """
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
    header = assembler.header
    if not trusted and header is not None and header.format != pb.RESULT_FORMAT_JSON:
        raise UntrustedResult(job_id, owner)
    return assembler.value()


def release(job_id: str) -> Op[bool]:
    """Free a finished job's result on the server; whether there was one to free."""
    response: pb.ReleaseJobResponse = yield Call("ReleaseJob", pb.ReleaseJobRequest(job_id=job_id))
    return response.released
