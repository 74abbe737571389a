"""The chain section: jobs as inputs, against direct Dask futures and a round trip per step.

In one run it starts a ``dask-compute serve`` subprocess and, in this
process, a ``LocalCluster`` of the same shape with a default
``distributed.Client``, and times, each repeat of the three moments apart,
a chain of jobs on ``distributed`` where each step takes the previous one's
array (64 MiB; 8 MiB quick) and returns a new one of the same size:

- the service, each step ``client.submit(step, previous_job)``: the array
  stays on the workers, a Dask dependency (only a small sum comes back);
- direct Dask, each step ``client.submit(step, previous_future)``: the
  target is the service within 1.5x of it;
- the service, each step's result downloaded (``job.result()``), uploaded
  again (``client.scatter``) and passed to the next ``submit``: the way a
  caller had to chain jobs before.

The server's metrics then show the bytes that passed through it.
"""

from __future__ import annotations

import logging
import re
import statistics
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from bench.table import Row, judge

logger = logging.getLogger(__name__)

MIB = 1024 * 1024
#: (bytes of each step's array, steps, repeats)
SIZES = {
    "full": (64 * MIB, 10, 3),
    "quick": (8 * MIB, 5, 2),
}
_BYTES = re.compile(r"^dask_compute_(?:received|sent)_bytes_total\{[^}]*\} (\S+)$", re.MULTILINE)


def run(quick: bool, workers: int, threads: int) -> list[Row]:
    """Start both sides, time the three chains, and return the table's rows."""
    from distributed import Client, LocalCluster

    from bench import processes
    from bench.data_tasks import expected_sum, make_array, step, total
    from client_sdk import ComputeClient

    nbytes, steps, repeats = SIZES["quick" if quick else "full"]
    metrics_port = processes.free_port()
    args = [
        *processes.cluster_args(workers, threads),
        "--job-store",
        "memory",
        "--max-object-bytes",
        str(2 * nbytes),
        "--metrics-port",
        str(metrics_port),
    ]
    want = expected_sum(nbytes) + steps * (nbytes // 8)

    def chained(submit: Callable[..., Any], result: Callable[[Any], Any]) -> Callable[[], None]:
        def once() -> None:
            current = submit(make_array, nbytes)
            for _ in range(steps):
                current = submit(step, current)
            assert result(submit(total, current)) == want

        return once

    with (
        processes.server(args) as service,
        ComputeClient(service.target, timeout=300) as client,
        LocalCluster(
            n_workers=workers, threads_per_worker=threads, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as direct,
    ):

        def reupload() -> None:
            current = client.submit(make_array, nbytes).result(timeout=300)
            for func in [step] * steps + [total]:
                ref = client.scatter(current)  # too large for a message: uploaded
                current = client.submit(func, ref).result(timeout=300)
                client.delete_object(ref)
            assert current == want

        service_chain = chained(
            lambda f, *a: client.submit(f, *a, scheduler="distributed"),
            lambda job: job.result(timeout=300),
        )
        direct_chain = chained(lambda f, *a: direct.submit(f, *a, pure=False), lambda f: f.result())
        service_chain()  # warm-up: the workers import numpy and bench
        direct_chain()
        before = _server_bytes(metrics_port)
        times: dict[str, list[float]] = {"service": [], "direct": [], "reupload": []}
        for _ in range(repeats):
            times["service"].append(_timed(service_chain))
            times["direct"].append(_timed(direct_chain))
        through = (_server_bytes(metrics_port) - before) / repeats
        for _ in range(repeats):
            times["reupload"].append(_timed(reupload))
    service_s, direct_s, reupload_s = (statistics.median(times[k]) for k in times)
    ratio = service_s / direct_s
    label = f"chain of {steps} jobs passing {nbytes // MIB} MiB, distributed"
    return [
        Row(
            label,
            f"{service_s:.2f} s",
            f"{direct_s:.2f} s",
            f"{ratio:.2f}x",
            "<= 1.5x",
            judge(ratio, 1.5),
        ),
        Row("  bytes through the server per chain (RPC metrics)", f"{through / MIB:.2f} MiB"),
        Row(
            "  download and re-upload each step (the way before)",
            f"{reupload_s:.2f} s",
            "",
            f"{reupload_s / service_s:.1f}x the chain",
        ),
    ]


def _timed(func: Callable[[], None]) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def _server_bytes(port: int) -> float:
    """Every byte the server received and sent in RPCs so far, from its metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(float(value) for value in _BYTES.findall(text))
