"""Turning traces on: the exporter the settings and ``OTEL_*`` variables ask for, and RPC spans.

:func:`tracing_from` decides, once at start-up, whether the server traces:

- ``--otlp-endpoint`` (``DASK_COMPUTE_OTLP_ENDPOINT``) exports with OTLP over
  gRPC to that collector;
- else the standard variables: ``OTEL_TRACES_EXPORTER`` (``otlp``,
  ``console`` or ``none``), or an ``OTEL_EXPORTER_OTLP_ENDPOINT`` /
  ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, which means ``otlp``. The OTLP
  exporter reads its other variables itself (headers, certificate, timeout,
  ``OTEL_EXPORTER_OTLP_INSECURE``);
- ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none`` turns it off
  whatever else says, and with nothing set it is off: unlike the SDK's own
  default (``otlp`` to ``localhost:4317``), a server nobody configured for
  tracing exports nothing, makes no span and imports no OpenTelemetry
  (:data:`server.tracing.OFF`).

On, the server has a tracer provider of its own (not the process-wide one):
its resource is ``service.name=dask-compute`` unless ``OTEL_SERVICE_NAME`` or
``OTEL_RESOURCE_ATTRIBUTES`` name it, and a batch span processor exports from
a thread of its own, never on the event loop. :func:`server_interceptors`
gives the OpenTelemetry gRPC instrumentation's server interceptor
(``opentelemetry-instrumentation-grpc``): a ``SERVER`` span per RPC, the
caller's trace context read from the call's metadata (W3C ``traceparent``;
``OTEL_PROPAGATORS`` may choose others), health checks and reflection left
out. It goes first among the server's interceptors, so a refused call has a
span too, and the jobs an RPC accepts are children of its span
(:mod:`server.tracing`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from server.config import Settings
from server.tracing import OFF, Tracing

logger = logging.getLogger(__name__)

#: The ``service.name`` of the server's spans, unless the environment names one.
SERVICE_NAME = "dask-compute"

#: The exporters this server can use (``OTEL_TRACES_EXPORTER``).
EXPORTERS = ("otlp", "console")


def exporter_names(settings: Settings, environ: Mapping[str, str]) -> tuple[str, ...]:
    """Which exporters the settings and variables ask for; ``()`` means tracing is off.

    Raises:
        RuntimeError: An exporter or protocol this server does not have.
    """
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return ()
    named = tuple(
        name.strip().lower()
        for name in environ.get("OTEL_TRACES_EXPORTER", "").split(",")
        if name.strip()
    )
    if "none" in named:
        return ()
    unknown = sorted(set(named) - set(EXPORTERS))
    if unknown:
        raise RuntimeError(
            f"OTEL_TRACES_EXPORTER={environ['OTEL_TRACES_EXPORTER']!r}: this server exports "
            f"traces with {' or '.join(EXPORTERS)} only, not {', '.join(unknown)}"
        )
    otlp_env = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if (settings.otlp_endpoint or otlp_env) and "otlp" not in named:
        named = ("otlp", *named)
    if "otlp" in named:
        protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get(
            "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"
        )
        if protocol.strip().lower() != "grpc":
            raise RuntimeError(
                f"OTLP protocol {protocol!r}: this server exports traces with OTLP over gRPC "
                "only (OTEL_EXPORTER_OTLP_PROTOCOL=grpc, a collector's port 4317)"
            )
    return named


def tracing_from(settings: Settings, environ: Mapping[str, str]) -> Tracing:
    """The server's tracing: :data:`server.tracing.OFF`, or a provider exporting as asked.

    Args:
        settings: Its ``otlp_endpoint``.
        environ: The ``OTEL_*`` variables (pass ``os.environ``).

    Raises:
        RuntimeError: An exporter or protocol this server does not have.
    """
    names = exporter_names(settings, environ)
    if not names:
        return OFF
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    import server

    attributes: dict[str, Any] = {"service.version": server.__version__}
    if environ.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = environ["OTEL_SERVICE_NAME"]
    elif "service.name=" not in environ.get("OTEL_RESOURCE_ATTRIBUTES", ""):
        attributes["service.name"] = SERVICE_NAME
    provider = TracerProvider(resource=Resource.create(attributes))
    for name in names:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name, settings)))
    where = settings.otlp_endpoint or "the OTEL_EXPORTER_OTLP_* endpoint"
    logger.info(
        "tracing: spans of RPCs and jobs exported with %s",
        ", ".join(f"otlp to {where}" if n == "otlp" else n for n in names),
    )
    return Tracing(provider)


def _exporter(name: str, settings: Settings) -> Any:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=settings.otlp_endpoint or None)


def server_interceptors(tracing: Tracing) -> list[Any]:
    """The interceptor that makes a server span per RPC; none when tracing is off."""
    if not tracing.enabled:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return [aio_server_interceptor(tracer_provider=tracing.provider, filter_=_traced)]


#: Services whose calls make no span: probes and ``grpcurl list`` would drown the RPCs.
UNTRACED = ("/grpc.health.", "/grpc.reflection.")


def _traced(details: Any) -> bool:
    """Whether a call gets a span: a plain prefix test, where the instrumentation's own
    filters (``health_check()`` ...) cost tens of microseconds a call in type checks."""
    return not details.method.startswith(UNTRACED)
