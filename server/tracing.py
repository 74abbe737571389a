"""The jobs' traces: one OpenTelemetry span per job, from its acceptance to its end.

:class:`Tracing` is all the core's parts see of OpenTelemetry. The runner
(:mod:`server.runner`) asks it for a job's span as it starts the job, and
hands the span back when the job's end is stored; the job's log lines carry
the span's trace id.

- **Off** (:data:`OFF`, what a server without ``--otlp-endpoint`` or the
  standard ``OTEL_*`` variables gets): no tracer, no span, no import of
  OpenTelemetry; a job costs one attribute test.
- **On**: it holds a tracer provider (made by :mod:`server.telemetry` with the
  exporter the settings ask for, or given by a test with an in-memory one).
  A job's span starts at the job's ``submit_time`` (its acceptance by the
  gate, :mod:`server.recording`) and ends when its end is recorded, with
  the job's id, kind, target, scheduler, owner, name and final state as
  attributes. The runner starts it in the context of the RPC that accepted
  the job (``Run``, ``SubmitJob``, ``SubmitJobs``), so it is a child of that
  RPC's server span, which OpenTelemetry's gRPC instrumentation makes
  (:mod:`server.telemetry`); a job re-run after a restart has no RPC, and its
  span starts a trace of its own.

This module never imports ``grpc``: the exporter and the RPC spans are the
gRPC side's (:mod:`server.telemetry`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from server.jobs import JobRecord, JobState

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span

logger = logging.getLogger(__name__)

#: The name of a job's span (its target and the rest are attributes: span
#: names stay few, as OpenTelemetry's naming guidance asks).
JOB_SPAN = "job"

#: Attribute names of a job's span.
JOB_ID = "dask_compute.job.id"
JOB_KIND = "dask_compute.job.kind"
JOB_TARGET = "dask_compute.job.target"
JOB_SCHEDULER = "dask_compute.job.scheduler"
JOB_OWNER = "dask_compute.job.owner"
JOB_NAME = "dask_compute.job.name"
JOB_STATE = "dask_compute.job.state"
#: OpenTelemetry's own attribute for what went wrong (the type of a failed job's error).
ERROR_TYPE = "error.type"


class Tracing:
    """Spans of jobs, or nothing; see the module docstring.

    Args:
        provider: The tracer provider whose processors export the spans;
            ``None`` turns tracing off.
    """

    def __init__(self, provider: TracerProvider | None = None) -> None:
        self.provider = provider
        #: Whether spans are made (tested once per job by the runner).
        self.enabled = provider is not None
        self._tracer: Any = None
        if provider is not None:
            from opentelemetry import trace

            self._trace = trace
            self._tracer = provider.get_tracer(__name__)

    def job_started(self, record: JobRecord, target: str) -> Span | None:
        """The span of a job being started, begun at its acceptance; ``None`` when off.

        Its parent is the span current here: the accepting RPC's.
        """
        if self._tracer is None:
            return None
        attributes = {
            JOB_ID: record.job_id,
            JOB_KIND: record.kind.value,
            JOB_TARGET: target,
            JOB_SCHEDULER: record.scheduler,
            JOB_OWNER: record.owner,
        }
        if record.name:
            attributes[JOB_NAME] = record.name
        return self._tracer.start_span(
            JOB_SPAN,
            kind=self._trace.SpanKind.INTERNAL,
            start_time=int(record.submit_time * 1e9),
            attributes=attributes,
        )

    def job_ended(self, span: Span, record: JobRecord, end_time: float) -> None:
        """End a job's span at ``end_time`` (seconds since the epoch) with its final state.

        A failed job's span has the error status and the error's type; a
        record that is not finished (another replica adopted the job) ends the
        span with the state the store holds.
        """
        span.set_attribute(JOB_STATE, record.state.value)
        if record.state is JobState.FAILED:
            error = record.error.type if record.error else "failed"
            span.set_attribute(ERROR_TYPE, error)
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, error))
        span.end(end_time=int(end_time * 1e9))

    def shutdown(self) -> None:
        """Export what is pending and stop the exporter (blocks: call it off the event loop)."""
        if self.provider is not None:
            self.provider.shutdown()


def trace_id(span: Span | None) -> str:
    """The 32 hex digits of a span's trace id, as OTLP back-ends show it; ``""`` for none."""
    if span is None:
        return ""
    return format(span.get_span_context().trace_id, "032x")


#: Tracing off: what a server gets unless an exporter is configured.
OFF = Tracing()
