"""What both clients need to open a channel and read a failed call.

Targets, channel options (message limits, keepalive, gRPC's own retry policy),
TLS and token credentials, the caller's trace context in each call's metadata,
and the one mapping from :class:`grpc.RpcError` to the SDK's exceptions. The synchronous and the asynchronous client differ only
in how they call the stub.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
import sys
from typing import Any, Union, cast

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

from client_sdk.errors import ComputeError, ServiceUnavailable, StatusCode, error_for

logger = logging.getLogger(__name__)

#: Where clients connect when neither an argument nor ``DASK_COMPUTE_TARGET`` says.
DEFAULT_TARGET = "127.0.0.1:50051"
#: Deadline of calls that answer at once, in seconds.
DEFAULT_TIMEOUT = 30.0
#: Largest message the client sends or accepts (the server's default limit).
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
#: Trailing metadata key of the ``google.rpc.Status`` with the error's details.
DETAILS_KEY = "grpc-status-details-bin"
#: The ``ErrorInfo.domain`` of the service's errors.
DOMAIN = "compute.v1"


@dataclasses.dataclass(frozen=True)
class TLSConfig:
    """TLS with a client certificate, for servers that require one (mutual TLS).

    Each field is a path to a PEM file, or the PEM bytes.

    Attributes:
        ca: The root certificate to check the server against; ``None`` uses
            the system's roots.
        cert: The client's certificate (chain).
        key: The client certificate's private key.
    """

    ca: str | os.PathLike[str] | bytes | None = None
    cert: str | os.PathLike[str] | bytes | None = None
    key: str | os.PathLike[str] | bytes | None = None


#: What ``tls=`` accepts: off, on with the system's roots, a PEM root
#: certificate, or a :class:`TLSConfig` (mutual TLS).
TLS = Union[bool, str, "os.PathLike[str]", bytes, TLSConfig, None]

# Calls are retried by gRPC itself when the server is UNAVAILABLE (restarting,
# or not yet listening). Where the server suggests a delay (its RetryInfo), it
# also sends it as gRPC's own grpc-retry-pushback-ms, which this retry policy
# honours: the next attempt waits that long instead of the backoff. Reads, CancelJob and ReleaseJob change nothing on a
# retry; Run, SubmitJob and SubmitJobs are safe to retry because every job
# carries a fresh request_id, with which the server runs a job at most once.
# (A new RPC must be added here knowingly: a unit test compares the lists.)
_RETRIED = (
    "GetClusterInfo",
    "ListFunctions",
    "GetJob",
    "WaitJob",
    "WaitJobs",
    "ListJobs",
    "CancelJob",
    "Run",
    "SubmitJob",
    "SubmitJobs",
    "GetJobResult",
    "ReleaseJob",
    "WatchJob",
    "GetObject",
    "DeleteObject",
)
SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{"service": "compute.v1.ComputeService", "method": m} for m in _RETRIED]
                + [{"service": "grpc.health.v1.Health"}],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)


def channel_options() -> list[tuple[str, Any]]:
    """Channel arguments: message limits, keepalive and the retry policy."""
    return [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.enable_retries", 1),
        ("grpc.service_config", SERVICE_CONFIG),
    ]


def parse_target(target: str | None) -> tuple[str, bool]:
    """``(host:port, tls)`` from ``host:port``, ``grpc://host:port`` or ``grpcs://host:port``.

    Args:
        target: The address; ``None`` or ``""`` reads ``DASK_COMPUTE_TARGET``,
            then falls back to :data:`DEFAULT_TARGET`.

    Returns:
        The address without its scheme, and whether the scheme asks for TLS.

    Raises:
        ValueError: The target is not of one of those forms.
    """
    target = target or os.environ.get("DASK_COMPUTE_TARGET") or DEFAULT_TARGET
    tls = target.startswith("grpcs://")
    for scheme in ("grpc://", "grpcs://"):
        target = target.removeprefix(scheme)
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or "/" in target:
        raise ValueError(
            f"target must be host:port, grpc://host:port or grpcs://host:port, got {target!r}"
        )
    return target, tls


def credentials(tls: TLS) -> grpc.ChannelCredentials | None:
    """TLS channel credentials, or ``None`` for a plaintext channel.

    Args:
        tls: ``False``/``None`` for plaintext; ``True`` for TLS checked against
            the system's root certificates; a path to a PEM file, or the PEM
            bytes, for TLS checked against that root certificate.

    Raises:
        OSError: The root certificate file cannot be read.
    """
    if tls is None or tls is False:
        return None
    if tls is True:
        return grpc.ssl_channel_credentials()
    if isinstance(tls, TLSConfig):
        if (tls.cert is None) != (tls.key is None):
            raise ValueError("a client certificate needs its key, and a key its certificate")
        return grpc.ssl_channel_credentials(
            root_certificates=_pem(tls.ca),
            private_key=_pem(tls.key),
            certificate_chain=_pem(tls.cert),
        )
    return grpc.ssl_channel_credentials(root_certificates=_pem(tls))


def _pem(value: Any) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return pathlib.Path(value).read_bytes()


def call_metadata(token: str | None) -> tuple[tuple[str, str], ...] | None:
    """The metadata sent with every call: ``authorization: Bearer <token>`` when given.

    Raises:
        ValueError: The token is empty or holds whitespace.
    """
    if token is None:
        return None
    if not token or any(c.isspace() for c in token):
        raise ValueError("token must be a non-empty string without whitespace")
    return (("authorization", f"Bearer {token}"),)


def with_trace_context(
    metadata: tuple[tuple[str, str], ...] | None,
) -> tuple[tuple[str, str], ...] | None:
    """``metadata`` plus the caller's OpenTelemetry trace context, when it has one.

    With a span current in the caller (``opentelemetry-api`` installed and
    used), OpenTelemetry's propagators write its context into the call's
    metadata (a W3C ``traceparent`` by default, ``OTEL_PROPAGATORS`` may
    choose others), as its gRPC client instrumentation would: a server that
    traces then makes its spans children of the caller's. A caller that never
    imported OpenTelemetry can have no span, and pays one dictionary look-up:
    the SDK neither needs nor imports it.
    """
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None or not trace.get_current_span().get_span_context().is_valid:
        return metadata
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return (*(metadata or ()), *carrier.items()) if carrier else metadata


def error_from_rpc(err: grpc.RpcError, unreachable: str = "") -> ComputeError:
    """The SDK exception for a failed call.

    Args:
        err: What the stub raised.
        unreachable: When the call ran out of time without ever reaching the
            server, a description of the channel (for example "127.0.0.1:1 is
            TRANSIENT_FAILURE"); the error is then :class:`ServiceUnavailable`,
            which is what the caller needs to know.
    """
    code = err.code() if hasattr(err, "code") else None
    status = StatusCode[code.name] if code is not None else StatusCode.UNKNOWN
    details = (err.details() if hasattr(err, "details") else "") or ""
    if unreachable:
        return ServiceUnavailable(status, f"could not reach the server: {unreachable}")
    trailing = err.trailing_metadata() if hasattr(err, "trailing_metadata") else None
    # (grpc's metadata items are (key, value) named tuples; types-grpcio's are not iterable)
    for key, value in cast("tuple[tuple[str, str | bytes], ...]", trailing or ()):
        if key == DETAILS_KEY and isinstance(value, bytes):
            return error_for(status, details, **rich_details(value))
    return error_for(status, details)


def rich_details(packed: bytes) -> dict[str, Any]:
    """The ``error_for`` keywords from a serialized ``google.rpc.Status``.

    The reason and metadata of the service's ``ErrorInfo`` (domain
    ``compute.v1``; another's, such as a proxy's, when the service sent
    none), the ``RetryInfo`` delay in seconds, and the ``BadRequest`` field
    violations. Details that do not parse are ignored: the code and message
    still tell what happened.
    """
    try:
        status = status_pb2.Status.FromString(packed)
    except DecodeError:
        logger.debug("a %s trailer that does not parse was ignored", DETAILS_KEY)
        return {}
    found: dict[str, Any] = {}
    violations: list[tuple[str, str]] = []
    for detail in status.details:
        info, retry, bad = (
            error_details_pb2.ErrorInfo(),
            error_details_pb2.RetryInfo(),
            error_details_pb2.BadRequest(),
        )
        # types-protobuf types DESCRIPTOR as a union that its Any.Is does not take.
        if detail.Is(info.DESCRIPTOR):  # type: ignore[arg-type]
            if detail.Unpack(info) and ("reason" not in found or info.domain == DOMAIN):
                found["reason"], found["metadata"] = info.reason, dict(info.metadata)
        elif detail.Is(retry.DESCRIPTOR):  # type: ignore[arg-type]
            if detail.Unpack(retry):
                found["retry_delay"] = retry.retry_delay.ToNanoseconds() / 1e9
        elif detail.Is(bad.DESCRIPTOR) and detail.Unpack(bad):  # type: ignore[arg-type]
            violations += [(v.field, v.description) for v in bad.field_violations]
    if violations:
        found["field_violations"] = tuple(violations)
    return found


def not_connected(state: grpc.ChannelConnectivity | None) -> bool:
    """Whether a channel in ``state`` has no connection to the server."""
    return state in (
        grpc.ChannelConnectivity.TRANSIENT_FAILURE,
        grpc.ChannelConnectivity.CONNECTING,
        grpc.ChannelConnectivity.IDLE,
    )
