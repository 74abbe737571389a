"""Following one job's state and progress with ``WatchJob`` streams, for both clients.

Unlike the long polls of :mod:`client_sdk._ops.waiting`, a watch reports
every change, and its rules for reopening a stream differ: :class:`Watching`
holds them, and each client reads the streams its own way.
"""

from __future__ import annotations

import logging
import time

from client_sdk import _convert
from client_sdk._ops.results import RESULT_STREAM_ATTEMPTS
from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk.errors import DeadlineExceeded, JobTimeout, ServiceUnavailable, StatusCode
from client_sdk.types import JobUpdate

logger = logging.getLogger(__name__)

#: Longest single WatchJob stream; longer watches reopen it, so every call has a deadline.
WATCH_STREAM = 600.0


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
