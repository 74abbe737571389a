"""The SDK's exceptions.

Exception tree::

    ComputeError
    ├── RPCError                  a call failed; .code is a StatusCode
    │   ├── InvalidArguments      INVALID_ARGUMENT
    │   ├── NotFound              NOT_FOUND
    │   │   ├── FunctionNotFound  no such named function
    │   │   └── JobNotFound       no such job (or it expired)
    │   ├── PermissionDenied      PERMISSION_DENIED / UNAUTHENTICATED
    │   ├── ResourceExhausted     RESOURCE_EXHAUSTED
    │   ├── FailedPrecondition    FAILED_PRECONDITION
    │   ├── ServiceUnavailable    UNAVAILABLE (retried first, by gRPC's retry policy),
    │   │                         or a deadline passed with no connection to the server
    │   └── DeadlineExceeded      DEADLINE_EXCEEDED
    ├── JobTimeout                a wait for a job ran out of time (also a TimeoutError)
    ├── JobCancelled              the job was cancelled (also concurrent.futures.CancelledError)
    ├── JobFailed                 the job raised, and its exception was not rebuilt here
    ├── UntrustedResult           a pickled result of a job this client did not submit
    └── VersionMismatch           client and server cannot exchange pickled work

A failed call's exception (an :class:`RPCError`) also carries what the
server sent as the standard error details: ``.reason``, a stable
UPPER_SNAKE_CASE name of what went wrong (``FUNCTION_NOT_FOUND``,
``CALLER_JOB_LIMIT``, ...; the list is in the service's ``.proto``) that
programs can test instead of the message; ``.metadata``, the facts that go
with it (the function name, the limit's name and value, the job id); and
``.retry_delay``, the seconds after which trying again may work, or ``None``.

A job whose code raised re-raises the remote exception itself when it can be
unpickled locally and the job is trusted (submitted through this client, or
attached with ``client.job(job_id, trust=True)``); :class:`JobFailed` is the
fallback, carrying the remote type, message and traceback.
"""

from __future__ import annotations

import concurrent.futures
import enum
import logging
from typing import Any

logger = logging.getLogger(__name__)


class StatusCode(enum.Enum):
    """gRPC status codes, so callers need not import ``grpc``."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class ComputeError(Exception):
    """Base of every exception the SDK raises."""


class RPCError(ComputeError):
    """A call to the service failed.

    Args:
        code: The gRPC status code.
        details: The server's message.
        reason: The server's reason (``ErrorInfo.reason``), or ``""``.
        metadata: The facts that go with it (``ErrorInfo.metadata``).
        retry_delay: Seconds after which trying again may work (``RetryInfo``).
        field_violations: ``(field, description)`` of each request field or
            function parameter at fault (``BadRequest``).

    Attributes:
        code: The gRPC status code.
        details: The server's message (for people).
        reason: A stable name of what went wrong, in UPPER_SNAKE_CASE, for
            programs; ``""`` when the server sent none (or the call never
            reached it).
        metadata: The facts that go with the reason, as strings (for example
            ``{"function": "fib"}``, or ``{"limit_name": "max_jobs_per_caller",
            "limit": "2", ...}``).
        retry_delay: Seconds the server suggests waiting before trying again,
            or ``None`` when waiting does not help.
        field_violations: ``(field, description)`` pairs for argument errors.
    """

    def __init__(
        self,
        code: StatusCode,
        details: str,
        *,
        reason: str = "",
        metadata: dict[str, str] | None = None,
        retry_delay: float | None = None,
        field_violations: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details
        self.reason = reason
        self.metadata: dict[str, str] = dict(metadata or {})
        self.retry_delay = retry_delay
        self.field_violations = field_violations


class InvalidArguments(RPCError):
    """The request was malformed: wrong arguments, unreadable payload, bad value."""


class NotFound(RPCError):
    """The function, job or result named does not exist."""


class FunctionNotFound(NotFound):
    """No named function by that name."""


class JobNotFound(NotFound):
    """No job by that id, or its record expired."""


class PermissionDenied(RPCError):
    """The caller lacks a credential or a permission."""


class ResourceExhausted(RPCError):
    """A server limit was reached."""


class FailedPrecondition(RPCError):
    """The job is not in a state to answer (for example, no result yet)."""


class ServiceUnavailable(RPCError):
    """The service could not be reached, or is starting or stopping.

    A call that runs out of time without ever connecting raises this too (its
    ``code`` is then ``DEADLINE_EXCEEDED``): the server was not reached.
    """


class DeadlineExceeded(RPCError):
    """The call's deadline passed."""


class JobTimeout(ComputeError, TimeoutError):
    """Waiting for a job ran out of time.

    After ``Job.result(timeout)`` or ``client.wait(job_id, timeout)`` the job
    goes on. After ``client.run(..., timeout=)`` or ``client.compute(...,
    timeout=)`` the server cancels it: nobody is left to read its result.
    """


class JobCancelled(ComputeError, concurrent.futures.CancelledError):
    """The job was cancelled."""


class JobFailed(ComputeError):
    """A job raised an exception that could not be rebuilt locally.

    Attributes:
        type: The remote exception's qualified type name.
        message: Its message.
        remote_traceback: The traceback on the server or worker.
    """

    def __init__(self, type: str, message: str, remote_traceback: str = "") -> None:
        super().__init__(f"{type}: {message}")
        self.type = type
        self.message = message
        self.remote_traceback = remote_traceback


class UntrustedResult(ComputeError):
    """A job's result is a pickle this client does not load unless told to trust it.

    Loading a pickle runs code chosen by whoever made it: the client loads
    pickles (results, exceptions) only of jobs submitted through it, unless
    the job was attached with ``client.job(job_id, trust=True)`` (the CLI's
    ``--trust-pickles``). A failed job's exception is then a
    :class:`JobFailed` with its type, message and traceback text instead.

    Attributes:
        job_id: The job's id.
        owner: The caller that submitted it.
    """

    def __init__(self, job_id: str, owner: str) -> None:
        super().__init__(
            f"the result of job {job_id} (owner {owner!r}) is a pickle from a job this client "
            "did not submit, and loading it would run that caller's code here; attach the job "
            "with client.job(job_id, trust=True) (CLI: --trust-pickles) to load it"
        )
        self.job_id = job_id
        self.owner = owner


class VersionMismatch(ComputeError):
    """Client and server run versions that cannot exchange pickled work.

    Raised before any pickled work is sent; the message names each package
    with both versions. The rules are in :mod:`client_sdk._versions`.

    Attributes:
        local: This side's versions (a :class:`client_sdk.Versions`).
        server: The server's versions.
    """

    def __init__(self, message: str, local: Any = None, server: Any = None) -> None:
        super().__init__(message)
        self.local = local
        self.server = server


_BY_CODE: dict[StatusCode, type[RPCError]] = {
    StatusCode.INVALID_ARGUMENT: InvalidArguments,
    StatusCode.NOT_FOUND: NotFound,
    StatusCode.PERMISSION_DENIED: PermissionDenied,
    StatusCode.UNAUTHENTICATED: PermissionDenied,
    StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    StatusCode.UNAVAILABLE: ServiceUnavailable,
    StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
}


_BY_REASON: dict[str, type[RPCError]] = {
    "FUNCTION_NOT_FOUND": FunctionNotFound,
    "JOB_NOT_FOUND": JobNotFound,
}


def error_for(
    code: StatusCode,
    details: str,
    reason: str = "",
    metadata: dict[str, str] | None = None,
    retry_delay: float | None = None,
    field_violations: tuple[tuple[str, str], ...] = (),
) -> RPCError:
    """The SDK exception for a failed call.

    Args:
        code: The call's status code.
        details: The server's message.
        reason: The server's reason (from the ``google.rpc.Status`` in the
            ``grpc-status-details-bin`` trailer), when it sent one; it tells,
            say, a missing function from a missing job.
        metadata: The facts that go with the reason.
        retry_delay: Seconds the server suggests waiting, if it did.
        field_violations: ``(field, description)`` pairs the server sent.
    """
    cls = _BY_CODE.get(code, RPCError)
    if code is StatusCode.NOT_FOUND:
        cls = _BY_REASON.get(reason, cls)
    return cls(
        code,
        details,
        reason=reason,
        metadata=metadata,
        retry_delay=retry_delay,
        field_violations=field_violations,
    )
