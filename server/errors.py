"""Errors the core raises, each naming the gRPC status code it maps to.

The code is stored as a string so that the core needs no ``grpc`` import;
:mod:`server.status` turns it into a status in one place, for the servicer
and for the calls the caller interceptor refuses. Raise these for what the
caller is to be told: anything else is answered ``INTERNAL`` with a fixed
message (its traceback logged on the server).

Each error also carries what :mod:`server.status` sends as the standard
error details (a ``google.rpc.Status`` in the ``grpc-status-details-bin``
trailer): a stable ``reason`` in UPPER_SNAKE_CASE (``ErrorInfo``, domain
:data:`DOMAIN`; each class has a default, raise sites that need finer name
theirs), ``metadata`` with the facts a program needs (``ErrorInfo.metadata``),
and, per class, the ``field`` at fault (``BadRequest``), the resource missing
(``ResourceInfo``) or the ``retry_delay`` after which trying again may work
(``RetryInfo``). The message is for people; programs read the reason.
Every reason is listed in ``protos/compute/v1/compute.proto``.

Exception tree::

    ServiceError                 INTERNAL             INTERNAL_ERROR
    ├── InvalidArgument          INVALID_ARGUMENT     INVALID_REQUEST   (+ field)
    │   └── InvalidPayload       INVALID_ARGUMENT     INVALID_PAYLOAD   (+ field)
    ├── NotFound                 NOT_FOUND            NOT_FOUND         (+ resource)
    │   ├── FunctionNotFound     NOT_FOUND            FUNCTION_NOT_FOUND
    │   └── JobNotFound          NOT_FOUND            JOB_NOT_FOUND
    ├── PermissionDenied         PERMISSION_DENIED    PERMISSION_DENIED
    ├── Unauthenticated          UNAUTHENTICATED      CREDENTIAL_REQUIRED
    ├── FailedPrecondition       FAILED_PRECONDITION  FAILED_PRECONDITION
    ├── Unavailable              UNAVAILABLE          CLUSTER_UNAVAILABLE (+ retry_delay)
    └── ResourceExhausted        RESOURCE_EXHAUSTED   RESOURCE_EXHAUSTED (+ retry_delay)
"""

from __future__ import annotations

from collections.abc import Mapping

#: The ``ErrorInfo.domain`` of every error the service raises.
DOMAIN = "compute.v1"

#: Seconds a caller is asked to wait (``RetryInfo``) where waiting helps: a
#: limit that frees as jobs or uploads finish, a cluster starting or reconnecting.
RETRY_DELAY = 1.0


class ServiceError(Exception):
    """Base of the errors a caller is told about; its message is sent as is.

    Args:
        message: What the caller is told (for people).
        reason: The stable reason (``ErrorInfo.reason``); the class's own by default.
        metadata: Facts a program needs (``ErrorInfo.metadata``); values are
            sent as strings.
        retry_delay: Seconds after which trying again may work (``RetryInfo``);
            ``None`` (the default) when waiting does not help.

    Attributes:
        status: The gRPC status code's name.
        reason: The reason sent.
        metadata: The facts sent, as strings.
        retry_delay: The delay sent, if any.
    """

    status: str = "INTERNAL"
    reason: str = "INTERNAL_ERROR"
    retry_delay: float | None = None

    def __init__(
        self,
        message: str = "",
        *,
        reason: str | None = None,
        metadata: Mapping[str, object] | None = None,
        retry_delay: float | None = None,
    ) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason
        self.metadata: dict[str, str] = {k: str(v) for k, v in (metadata or {}).items()}
        if retry_delay is not None:
            self.retry_delay = retry_delay


class InvalidArgument(ServiceError):
    """The request is malformed or names arguments the function cannot take.

    Args:
        message: What is wrong and what was expected (also the field
            violation's description).
        field: The request field or function parameter at fault
            (``BadRequest.FieldViolation.field``), when one is.
        reason: As for :class:`ServiceError`.
        metadata: As for :class:`ServiceError`.
    """

    status = "INVALID_ARGUMENT"
    reason = "INVALID_REQUEST"

    def __init__(
        self,
        message: str = "",
        *,
        field: str = "",
        reason: str | None = None,
        metadata: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.field = field


class InvalidPayload(InvalidArgument):
    """Serialized work could not be loaded."""

    reason = "INVALID_PAYLOAD"


class NotFound(ServiceError):
    """Something the request names does not exist.

    Args:
        message: What is missing, for people.
        resource_name: Its id or name (``ResourceInfo.resource_name``, and
            ``metadata[resource_key]`` when the class names a key).
        resource_type: ``"job"``, ``"function"``, ``"object"`` or ``"result"``
            (``ResourceInfo.resource_type``); the class's own by default.
        reason: As for :class:`ServiceError`.
        metadata: As for :class:`ServiceError`.
    """

    status = "NOT_FOUND"
    reason = "NOT_FOUND"
    #: The message when none is given, from ``resource_name`` (``{name!r}``).
    default_message: str = ""
    resource_type: str = ""
    #: The metadata key that names the resource, if the class has one.
    resource_key: str = ""

    def __init__(
        self,
        message: str = "",
        *,
        resource_name: str = "",
        resource_type: str | None = None,
        reason: str | None = None,
        metadata: Mapping[str, object] | None = None,
    ) -> None:
        if not message and self.default_message:
            message = self.default_message.format(name=resource_name)
        super().__init__(message, reason=reason, metadata=metadata)
        if resource_type is not None:
            self.resource_type = resource_type
        self.resource_name = resource_name
        if resource_name and self.resource_key:
            self.metadata.setdefault(self.resource_key, resource_name)


class FunctionNotFound(NotFound):
    """No named function by that name."""

    reason = "FUNCTION_NOT_FOUND"
    resource_type = "function"
    resource_key = "function"


class JobNotFound(NotFound):
    """No job by that id (never accepted, or its record expired)."""

    reason = "JOB_NOT_FOUND"
    default_message = "no job with id {name!r} (never accepted, or expired)"
    resource_type = "job"
    resource_key = "job_id"


class PermissionDenied(ServiceError):
    """The caller is known but lacks the permission the request needs."""

    status = "PERMISSION_DENIED"
    reason = "PERMISSION_DENIED"


class Unauthenticated(ServiceError):
    """The call carries no valid credential (by default: none at all)."""

    status = "UNAUTHENTICATED"
    reason = "CREDENTIAL_REQUIRED"


class FailedPrecondition(ServiceError):
    """The request is valid but the job is not in a state to answer it."""

    status = "FAILED_PRECONDITION"
    reason = "FAILED_PRECONDITION"


class Unavailable(ServiceError):
    """The cluster is starting, stopping or unreachable; try again later.

    By default the Dask scheduler does not answer (``CLUSTER_UNAVAILABLE``),
    and the caller is asked to wait :data:`RETRY_DELAY` before trying again.
    """

    status = "UNAVAILABLE"
    reason = "CLUSTER_UNAVAILABLE"
    retry_delay = RETRY_DELAY


class ResourceExhausted(ServiceError):
    """A limit was reached."""

    status = "RESOURCE_EXHAUSTED"
    reason = "RESOURCE_EXHAUSTED"


def cluster_starting() -> Unavailable:
    """The error for a call that needs the Dask cluster before it has started."""
    return Unavailable(
        "the Dask cluster is still starting; retry shortly", reason="CLUSTER_STARTING"
    )


def shutting_down() -> Unavailable:
    """The error for new work while this server shuts down (another instance may take it)."""
    return Unavailable(
        "the server is shutting down; retry against another instance",
        reason="SERVER_SHUTTING_DOWN",
    )
