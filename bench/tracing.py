"""The tracing section: what traces cost on the ping path, off and on.

Four servers of the same shape, side by side, each a process of its own, in
two pairs, each traced one compared with its untraced twin:

- served: two ``dask-compute serve``, one with tracing off (no
  ``--otlp-endpoint``, no ``OTEL_*``: the default), one with
  ``--otlp-endpoint`` to an OTLP collector in a fifth process, which counts
  the spans and drops them (what making and exporting the spans costs);
- in-process: two services built by ``server.app.running`` in a process of
  their own, one with tracing off, one whose spans go to OpenTelemetry's
  ``InMemorySpanExporter`` (what making them costs). This pair lacks what
  ``dask-compute serve`` adds (its log thread, its garbage collector
  settings), so it is compared with itself only.

Against each, ``run("ping")`` on the ``threads`` scheduler (the service's
shortest job path, no Dask in it), and against the served pair with a span
current in the caller too (the SDK then sends its ``traceparent``, and the
server's spans join the caller's trace), timed in alternating rounds.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import multiprocessing
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from bench.table import Row, judge, latency

logger = logging.getLogger(__name__)

#: Calls per configuration.
CALLS = {"full": 3000, "quick": 300}


class _Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP trace receiver that counts the spans it is sent and keeps none."""

    def __init__(self, spans: Any) -> None:
        self.spans = spans  # a multiprocessing.Value, read by the benchmark's process

    def Export(self, request, context):  # the OTLP service's method
        count = sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
        with self.spans.get_lock():
            self.spans.value += count
        return trace_service_pb2.ExportTraceServiceResponse()


def _collect(ports: Any, spans: Any, stop: Any) -> None:
    """A spawned process's body: serve a :class:`_Collector` on 127.0.0.1 until ``stop``."""
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Collector(spans), server)
    ports.put(server.add_insecure_port("127.0.0.1:0"))
    server.start()
    stop.wait()
    server.stop(None)


def _serve_in_process(settings: Any, traced: bool, ports: Any, spans: Any, stop: Any) -> None:
    """A spawned process's body: the real service (``server.app.running``), tracing
    off, or (``traced``) with its spans going to an in-memory exporter."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from server.app import running
    from server.auth import Authenticator
    from server.tracing import OFF, Tracing

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = Tracing(provider) if traced else OFF

    async def main() -> None:
        async with running(settings, Authenticator.from_settings(settings), tracing) as s:
            ports.put(s.port)
            while not stop.is_set():
                await asyncio.sleep(0.1)
            await s.shut_down(0)

    asyncio.run(main())
    spans.value = len(exporter.get_finished_spans())


@contextlib.contextmanager
def _spawned(target: Callable[..., None], *args: Any) -> Iterator[tuple[int, Any]]:
    """``target(*args, ports, spans, stop)`` in a spawned process; yields its port and span count."""
    context = multiprocessing.get_context("spawn")
    ports, spans, stop = context.Queue(), context.Value("q", 0), context.Event()
    # Not a daemon: the service's Dask workers are its children.
    child = context.Process(target=target, args=(*args, ports, spans, stop))
    child.start()
    try:
        yield ports.get(timeout=180), spans
    finally:
        stop.set()
        child.join(60)
        if child.is_alive():
            child.kill()


def _settings(folder: str, name: str, workers: int, threads: int) -> Any:
    from server.config import Settings

    return Settings(
        port=0,
        n_workers=workers,
        threads_per_worker=threads,
        processes=True,
        dashboard_address="",
        job_store=f"sqlite:///{folder}/{name}.db",
    )


#: Each configuration against the one it is a ratio to, and the target of that ratio.
_BASES = {
    "served: off, caller's span": ("served: off", 1.05),
    "served: on, OTLP to a collector": ("served: off", 1.25),
    "served: on, OTLP, caller's span": ("served: off", 1.35),
    "in-process: on, in-memory exporter": ("in-process: off", 1.25),
}


def run(quick: bool, workers: int, threads: int) -> list[Row]:
    """Start the servers, time the pings, and return the rows."""
    from opentelemetry.sdk.trace import TracerProvider

    from bench import measure, processes
    from client_sdk import ComputeClient

    calls = CALLS["quick" if quick else "full"]
    # The caller's spans: recorded, exported nowhere (what they cost is the caller's).
    tracer = TracerProvider().get_tracer("bench")

    def ping(client: ComputeClient, in_span: bool = False) -> Callable[[], None]:
        def call() -> None:
            if in_span:
                with tracer.start_as_current_span("caller"):
                    client.run("ping", scheduler="threads")
            else:
                client.run("ping", scheduler="threads")

        return call

    with contextlib.ExitStack() as stack:
        folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="dask-compute-bench-"))
        collector_port, exported = stack.enter_context(_spawned(_collect))
        endpoint = ("--otlp-endpoint", f"http://127.0.0.1:{collector_port}")
        targets = {
            "served: off": stack.enter_context(processes.service(workers, threads)),
            "served: on": stack.enter_context(processes.service(workers, threads, endpoint)),
        }
        in_memory = None
        for name, traced in (("in-process: off", False), ("in-process: on", True)):
            settings = _settings(folder, name[-3:].strip(": "), workers, threads)
            port, spans = stack.enter_context(_spawned(_serve_in_process, settings, traced))
            targets[name] = f"127.0.0.1:{port}"
            in_memory = spans if traced else in_memory
        clients = {
            name: stack.enter_context(ComputeClient(target, timeout=120))
            for name, target in targets.items()
        }
        timed = measure.interleaved(
            {
                "served: off": ping(clients["served: off"]),
                "served: off, caller's span": ping(clients["served: off"], in_span=True),
                "served: on, OTLP to a collector": ping(clients["served: on"]),
                "served: on, OTLP, caller's span": ping(clients["served: on"], in_span=True),
                "in-process: off": ping(clients["in-process: off"]),
                "in-process: on, in-memory exporter": ping(clients["in-process: on"]),
            },
            calls,
        )
    rows = [Row(f'tracing: run("ping"), threads, {calls} calls each', "")]
    for label, lat in timed.items():
        if label not in _BASES:
            rows.append(Row(f"  {label}", latency(lat)))
            continue
        base, limit = _BASES[label]
        ratio = lat.p50 / timed[base].p50
        rows.append(
            Row(
                f"  {label}",
                latency(lat),
                "",
                f"{ratio:.2f}x {base.split(': ')[1]}",
                f"<= {limit:.2f}x",
                judge(ratio, limit),
            )
        )
    # Each call of a traced server makes two spans (its RPC's and its job's).
    rows.append(
        Row(
            "  spans made (in memory; at the collector)",
            f"{in_memory.value:,}; {exported.value:,}",
        )
    )
    return rows
