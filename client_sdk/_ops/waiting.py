"""Waiting for jobs to finish with ``WaitJob`` and ``WaitJobs`` long polls.

``wait`` returns a record; ``_watch`` and ``_watch_group`` are what the
clients run to settle the futures of the jobs they submitted (one job, or a
``map``'s batch together). Every long poll lasts at most :data:`LONG_POLL`
seconds and has a deadline; longer waits repeat it. (Following a job's
progress with ``WatchJob`` streams is :mod:`client_sdk._ops.watching`.)
"""

from __future__ import annotations

import logging
from typing import Any

from client_sdk import _convert
from client_sdk._ops import results
from client_sdk._ops.base import Session
from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk._sansio import Call, Op
from client_sdk.errors import JobTimeout, NotFound, StatusCode
from client_sdk.types import JobInfo, JobState

logger = logging.getLogger(__name__)

#: Longest single WaitJob; longer waits repeat it, so every call has a deadline.
LONG_POLL = 60.0


class Waiting(Session):
    """The operations that wait for jobs to finish."""

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

    def _watch(self, job_id: str, trusted: bool) -> Op[tuple[JobInfo, Any, BaseException | None]]:
        # Until the job finishes; then its value (or StreamedResult) or exception.
        # The server keeps the result (others may attach to the job with
        # client.job(id)) until its TTL or Job.release().
        info, result = yield from self._long_poll(job_id, None)
        value, error = yield from results.settled(info, result, fetch=False, trusted=trusted)
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
                # A group is a batch this client submitted (map): its own pickles.
                value, error = yield from results.settled(info, result, fetch=False, trusted=True)
                job._settle(info, value, error)
