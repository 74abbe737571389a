"""Traces: a caller's span contains the server's RPC span, which contains the job's span.

The in-process server here has a tracer provider of the test's own, exporting
to OpenTelemetry's ``InMemorySpanExporter`` (the seam is
:class:`server.tracing.Tracing`); the caller's span comes from the same
provider, and the SDK sends its context in the call's metadata. A
``dask-compute serve`` process then exports over real OTLP/gRPC to a
collector this module runs (``--otlp-endpoint``), and one told
``OTEL_TRACES_EXPORTER=none`` sends that collector nothing.
"""

from __future__ import annotations

import concurrent.futures
import logging
import re
import threading

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from client_sdk import ComputeClient
from tests.helpers import local_settings, running_server, serving_in_process, wait_until

pytestmark = pytest.mark.integration

_SERVICE = "/compute.v1.ComputeService/"
_SMALL = ("--n-workers", "1", "--no-processes", "--dashboard-address", "", "--local-processes", "1")


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture(scope="module")
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


@pytest.fixture(scope="module")
def traced_server(tmp_path_factory: pytest.TempPathFactory, provider: TracerProvider):
    from server.tracing import Tracing

    settings = local_settings(
        tmp_path_factory.mktemp("traced"),
        n_workers=1,
        threads_per_worker=1,
        processes=False,
        dashboard_address="",
        local_processes=1,
        job_store="memory",
    )
    with serving_in_process(settings, Tracing(provider)) as srv:
        yield srv


@pytest.fixture
def traced_client(traced_server, exporter: InMemorySpanExporter):
    with ComputeClient(traced_server.target, timeout=60) as client:
        client.info()  # the version check's calls, before the test's spans
        exporter.clear()
        yield client


def _in_trace(exporter: InMemorySpanExporter, caller: ReadableSpan, count: int):
    """The finished spans of ``caller``'s trace, once there are ``count`` of them."""

    def spans():
        found = [
            s
            for s in exporter.get_finished_spans()
            if s.context.trace_id == caller.context.trace_id
        ]
        return found if len(found) >= count else None

    return wait_until(spans, 10, message=f"{count} spans in the caller's trace")


def _one(spans, name: str) -> ReadableSpan:
    named = [s for s in spans if s.name == name]
    assert len(named) == 1, [s.name for s in spans]
    return named[0]


def test_a_run_s_job_span_is_in_the_rpc_span_in_the_caller_s_span(
    traced_client, exporter, provider
):
    with provider.get_tracer("test").start_as_current_span("caller") as caller:
        assert (
            traced_client.run("greet", "trace", scheduler="threads", job_name="t1")
            == "hello trace!"
        )
    spans = _in_trace(exporter, caller, 3)
    rpc = _one(spans, _SERVICE + "Run")
    job = _one(spans, "job")
    assert rpc.kind is SpanKind.SERVER
    assert rpc.parent.span_id == caller.context.span_id
    assert rpc.attributes["rpc.service"] == "compute.v1.ComputeService"
    assert rpc.attributes["rpc.method"] == "Run"
    assert job.parent.span_id == rpc.context.span_id
    attributes = dict(job.attributes)
    job_id = attributes.pop("dask_compute.job.id")
    assert re.fullmatch(r"[0-9a-f]{32}", job_id), job_id
    assert attributes == {
        "dask_compute.job.kind": "function",
        "dask_compute.job.target": "greet",
        "dask_compute.job.scheduler": "threads",
        "dask_compute.job.owner": "anonymous",
        "dask_compute.job.name": "t1",
        "dask_compute.job.state": "succeeded",
    }
    # From acceptance to end, within the RPC.
    assert rpc.start_time <= job.start_time <= job.end_time <= rpc.end_time


def test_a_submitted_job_s_span_is_a_child_of_the_submitjob_span(traced_client, exporter, provider):
    with provider.get_tracer("test").start_as_current_span("caller") as caller:
        job = traced_client.submit_function("greet", "later", scheduler="threads")
        assert job.result(timeout=30) == "hello later!"
    spans = _in_trace(exporter, caller, 3)
    submit = _one(spans, _SERVICE + "SubmitJob")
    job_span = _one(spans, "job")
    assert submit.parent.span_id == caller.context.span_id
    assert job_span.parent.span_id == submit.context.span_id
    assert job_span.attributes["dask_compute.job.id"] == job.job_id
    assert job_span.attributes["dask_compute.job.state"] == "succeeded"


def test_the_jobs_of_a_batch_are_children_of_the_submitjobs_span(traced_client, exporter, provider):
    with provider.get_tracer("test").start_as_current_span("caller") as caller:
        jobs = traced_client.map(lambda x: x + 1, [1, 2, 3], scheduler="threads")
        assert traced_client.gather(jobs, timeout=30) == [2, 3, 4]
    spans = _in_trace(exporter, caller, 5)
    batch = _one(spans, _SERVICE + "SubmitJobs")
    job_spans = [s for s in spans if s.name == "job"]
    assert sorted(s.attributes["dask_compute.job.id"] for s in job_spans) == sorted(
        j.job_id for j in jobs
    )
    assert {s.parent.span_id for s in job_spans} == {batch.context.span_id}
    assert {s.attributes["dask_compute.job.kind"] for s in job_spans} == {"pickled_call"}


def test_a_failed_job_s_span_has_its_state_and_error(traced_client, exporter, provider):
    with provider.get_tracer("test").start_as_current_span("caller") as caller:
        with pytest.raises(ValueError, match="traced failure"):
            traced_client.run("fail", "traced failure", scheduler="threads")
    job = _one(_in_trace(exporter, caller, 3), "job")
    assert job.attributes["dask_compute.job.state"] == "failed"
    assert job.attributes["error.type"] == "builtins.ValueError"
    assert job.status.status_code is StatusCode.ERROR


def test_a_job_s_log_lines_carry_its_trace_id(traced_client, exporter, provider, caplog):
    caplog.set_level(logging.INFO, logger="server.runner")
    with provider.get_tracer("test").start_as_current_span("caller") as caller:
        traced_client.run("greet", "logs", scheduler="threads")
    job = _one(_in_trace(exporter, caller, 3), "job")
    trace_id = format(caller.context.trace_id, "032x")
    lines = [
        r.getMessage()
        for r in caplog.records
        if r.getMessage().startswith(f"job={job.attributes['dask_compute.job.id']} ")
    ]
    assert [line.split()[1] for line in lines] == ["event=started", "event=finished"]
    assert all(line.endswith(f" trace_id={trace_id}") for line in lines), lines


def test_health_checks_make_no_span(traced_server, exporter):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    exporter.clear()
    with grpc.insecure_channel(traced_server.target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert exporter.get_finished_spans() == ()


# -- a server process, exporting over OTLP ---------------------------------------------


class _Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP trace receiver: keeps the spans it is sent, with their service's name."""

    def __init__(self) -> None:
        self.spans: list = []
        self.services: set[str] = set()
        self._lock = threading.Lock()

    def Export(self, request, context):  # the OTLP service's method
        with self._lock:
            for resource_spans in request.resource_spans:
                for attribute in resource_spans.resource.attributes:
                    if attribute.key == "service.name":
                        self.services.add(attribute.value.string_value)
                for scope_spans in resource_spans.scope_spans:
                    self.spans.extend(scope_spans.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
def collector():
    receiver = _Collector()
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield receiver, f"http://127.0.0.1:{port}"
    server.stop(None)


def _attributes(span) -> dict[str, str]:
    return {
        a.key: a.value.string_value for a in span.attributes if a.value.HasField("string_value")
    }


@pytest.mark.slow
def test_a_server_process_exports_its_spans_with_otlp(tmp_path, collector, provider):
    receiver, endpoint = collector
    env = {"OTEL_BSP_SCHEDULE_DELAY": "100"}
    with running_server(
        ("--otlp-endpoint", endpoint, *_SMALL), tmp_path / "server.log", env=env
    ) as srv:
        with ComputeClient(srv.target, timeout=60) as client:
            with provider.get_tracer("test").start_as_current_span("caller") as caller:
                assert client.run("ping", scheduler="threads") == "pong"
        trace_id = caller.context.trace_id.to_bytes(16, "big")

        def exported():
            ours = [s for s in list(receiver.spans) if s.trace_id == trace_id]
            return ours if {s.name for s in ours} >= {_SERVICE + "Run", "job"} else None

        spans = wait_until(exported, 30, message="the Run's spans at the collector")
        rpc = next(s for s in spans if s.name == _SERVICE + "Run")
        job = next(s for s in spans if s.name == "job")
        assert rpc.parent_span_id == caller.context.span_id.to_bytes(8, "big")
        assert job.parent_span_id == rpc.span_id
        assert _attributes(job)["dask_compute.job.target"] == "ping"
        assert _attributes(job)["dask_compute.job.state"] == "succeeded"
        assert receiver.services == {"dask-compute"}
        job_id = _attributes(job)["dask_compute.job.id"]
        # The job's lines in the server's own log (written by its log thread).
        wait_until(lambda: f"job={job_id} event=finished" in srv.log(), 10)
    started = re.search(rf"job={job_id} event=started .* trace_id=(\w+)", srv.log())
    assert started is not None and started.group(1) == trace_id.hex()
    assert f"tracing: spans of RPCs and jobs exported with otlp to {endpoint}" in srv.log()


@pytest.mark.slow
def test_a_server_told_none_exports_nothing(tmp_path, collector, provider):
    receiver, endpoint = collector
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_TRACES_EXPORTER": "none"}
    with running_server(_SMALL, tmp_path / "server.log", env=env) as srv:
        with ComputeClient(srv.target, timeout=60) as client:
            with provider.get_tracer("test").start_as_current_span("caller"):
                assert client.run("ping", scheduler="threads") == "pong"
    # Stopped: a server that traced would have exported what it had queued by now.
    assert receiver.spans == []
    assert "trace_id=" not in srv.log()
    assert "tracing:" not in srv.log()
