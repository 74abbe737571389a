"""Errors the core raises, each naming the gRPC status code it maps to.

The code is stored as a string so that the core needs no ``grpc`` import;
:mod:`server.status` turns it into a status in one place, for the servicer
and for the calls the caller interceptor refuses. Raise these for what the
caller is to be told: anything else is answered ``INTERNAL`` with a fixed
message (its traceback logged on the server).

Exception tree::

    ServiceError                 INTERNAL
    ├── InvalidArgument          INVALID_ARGUMENT
    │   └── InvalidPayload       INVALID_ARGUMENT
    ├── NotFound                 NOT_FOUND
    │   ├── FunctionNotFound     NOT_FOUND
    │   └── JobNotFound          NOT_FOUND
    ├── PermissionDenied         PERMISSION_DENIED
    ├── Unauthenticated          UNAUTHENTICATED
    ├── FailedPrecondition       FAILED_PRECONDITION
    ├── Unavailable              UNAVAILABLE
    └── ResourceExhausted        RESOURCE_EXHAUSTED
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base of the errors a caller is told about; its message is sent as is."""

    status: str = "INTERNAL"


class InvalidArgument(ServiceError):
    """The request is malformed or names arguments the function cannot take."""

    status = "INVALID_ARGUMENT"


class InvalidPayload(InvalidArgument):
    """Serialized work could not be loaded."""


class NotFound(ServiceError):
    """Something the request names does not exist."""

    status = "NOT_FOUND"


class FunctionNotFound(NotFound):
    """No named function by that name."""


class JobNotFound(NotFound):
    """No job by that id (never accepted, or its record expired)."""


class PermissionDenied(ServiceError):
    """The caller is known but lacks the permission the request needs."""

    status = "PERMISSION_DENIED"


class Unauthenticated(ServiceError):
    """The call carries no valid credential."""

    status = "UNAUTHENTICATED"


class FailedPrecondition(ServiceError):
    """The request is valid but the job is not in a state to answer it."""

    status = "FAILED_PRECONDITION"


class Unavailable(ServiceError):
    """The cluster is starting, stopping or unreachable; try again later."""

    status = "UNAVAILABLE"


class ResourceExhausted(ServiceError):
    """A limit was reached."""

    status = "RESOURCE_EXHAUSTED"
