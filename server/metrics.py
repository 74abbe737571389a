"""Prometheus metrics of the service, served on ``--metrics-port`` by ``prometheus-client``.

Every server keeps its metrics in its own registry (several servers may share
a process in tests). Names follow Prometheus conventions: ``_total`` counters,
``_seconds`` and ``_bytes`` units.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, cast

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

logger = logging.getLogger(__name__)

#: Job durations from a millisecond to an hour.
JOB_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
    900,
    3600,
)
#: RPC latencies from a tenth of a millisecond to a minute.
RPC_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    5,
    15,
    60,
)


class Metrics:
    """The service's metrics.

    Args:
        pending: Returns the number of unfinished jobs (the queue depth gauge).
        cluster: Returns ``(workers, threads, memory bytes)`` of the last
            cluster snapshot, or ``None`` before the first.
    """

    def __init__(
        self,
        pending: Callable[[], int] = lambda: 0,
        cluster: Callable[[], tuple[int, int, int] | None] = lambda: None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        r = self.registry
        self.jobs_submitted = Counter(
            "dask_compute_jobs_submitted_total", "Jobs accepted.", ["kind", "scheduler"], registry=r
        )
        self.jobs_finished = Counter(
            "dask_compute_jobs_finished_total",
            "Jobs that reached a final state.",
            ["state", "scheduler"],
            registry=r,
        )
        self.job_duration = Histogram(
            "dask_compute_job_duration_seconds",
            "Time from a job's start to its end.",
            ["scheduler"],
            buckets=JOB_BUCKETS,
            registry=r,
        )
        self.rpcs = Counter(
            "dask_compute_rpcs_total", "RPCs answered.", ["method", "code"], registry=r
        )
        self.rpc_latency = Histogram(
            "dask_compute_rpc_duration_seconds",
            "Time to answer an RPC.",
            ["method"],
            buckets=RPC_BUCKETS,
            registry=r,
        )
        self.bytes_in = Counter(
            "dask_compute_received_bytes_total", "Request bytes received.", ["method"], registry=r
        )
        self.bytes_out = Counter(
            "dask_compute_sent_bytes_total", "Response bytes sent.", ["method"], registry=r
        )
        self.input_bytes = Counter(
            "dask_compute_job_input_bytes_total",
            "Bytes of jobs' results brought to this server as inputs of other jobs "
            "(local schedulers; on distributed they stay on the cluster).",
            ["scheduler"],
            registry=r,
        )
        queue = Gauge(
            "dask_compute_jobs_pending", "Unfinished (queued or running) jobs.", registry=r
        )
        queue.set_function(pending)
        for index, (name, text) in enumerate(
            (
                ("dask_compute_cluster_workers", "Dask workers, at the last look."),
                ("dask_compute_cluster_threads", "Dask worker threads, at the last look."),
                (
                    "dask_compute_cluster_memory_bytes",
                    "Dask workers' memory limits, at the last look.",
                ),
            )
        ):
            gauge = Gauge(name, text, registry=r)
            # The cast: mypy cannot infer a lambda whose default binds the loop's index.
            read = cast("Callable[[], float]", lambda i=index: float((cluster() or (0, 0, 0))[i]))
            gauge.set_function(read)

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, looked up once: prometheus-client's lookup
        takes its lock and checks every label each time, on every call."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def job_submitted(self, kind: str, scheduler: str) -> None:
        """Count an accepted job."""
        self._child(self.jobs_submitted, kind, scheduler).inc()

    def job_finished(self, state: str, scheduler: str, seconds: float | None) -> None:
        """Count a finished job and observe how long it ran."""
        self._child(self.jobs_finished, state, scheduler).inc()
        if seconds is not None:
            self._child(self.job_duration, scheduler).observe(seconds)

    def rpc(self, method: str, code: str, seconds: float, received: int, sent: int) -> None:
        """Count an answered RPC with its status code, latency and sizes."""
        self._child(self.rpcs, method, code).inc()
        self._child(self.rpc_latency, method).observe(seconds)
        if received:
            self._child(self.bytes_in, method).inc(received)
        if sent:
            self._child(self.bytes_out, method).inc(sent)

    def job_input(self, scheduler: str, nbytes: int) -> None:
        """Count a job's result brought here (``nbytes``, as Dask sizes it) for a job using it."""
        self._child(self.input_bytes, scheduler).inc(nbytes)

    def serve(self, host: str, port: int) -> Any:
        """Serve ``/metrics`` over HTTP; returns the server (``.server_port`` has the port)."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        logger.info("metrics on http://%s:%d/metrics", host, server.server_port)
        return server
