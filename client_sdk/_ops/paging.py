"""Listing job records page by page: ``list_jobs`` and :class:`JobPages`.

Each client iterates the pages its own way (:func:`client_sdk._sansio.pages`
and :func:`~client_sdk._sansio.async_pages`); the paging itself, the page
token and the ``limit``, is here once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from client_sdk import _convert
from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk._sansio import Call, Op
from client_sdk.types import JobInfo, JobState

logger = logging.getLogger(__name__)


class Paging:
    """The listing operation (it needs nothing of the client's state)."""

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
