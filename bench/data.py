"""The data section: large results and uploads against a bare gRPC stream.

In one run, on one machine, it starts a ``dask-compute serve`` subprocess and
the bare streaming server of :mod:`bench.stream` (the transport floor, in its
own process too) and measures, each repeat of the service moments after the
same transfer through the floor:

- a large NumPy result (256 MiB) read through ``GetJobResult`` by the SDK
  (``job.result()`` of a job that has already finished, so the figure is the
  transfer, not the compute) against a bare server-streaming call of the same
  number of bytes in the same 1 MiB chunks, received into one buffer as the
  SDK receives them: MB/s and the ratio, target at least 0.5x;
  and where its time goes, from a bare ``GetJobResult`` stream of the same
  kind of result (seconds to its header, to its last chunk);
- the server process's peak RSS growth while it streams that result (its
  workers are other processes: the result comes from one of them through
  the server, a few pieces at a time), target under 1.5x the result's size;
- an upload of the same size through ``PutObject`` (``client.scatter``)
  against a bare client-streaming call, and the server's RSS growth meanwhile;
  then the same array scattered again (content-addressed: answered without
  an upload) and 20 jobs taking the reference, while the server's
  received-bytes metric shows that nothing was sent again.
"""

from __future__ import annotations

import contextlib
import logging
import re
import statistics
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

from bench.table import Row, judge

logger = logging.getLogger(__name__)

MIB = 1024 * 1024
#: (bytes of the result and of the upload, jobs taking the uploaded object, repeats)
SIZES = {
    "full": (256 * MIB, 20, 3),
    "quick": (32 * MIB, 5, 2),
}
#: How often the server's RSS is sampled during a transfer, in seconds.
SAMPLE_EVERY = 0.002
_STREAM = re.compile(r"stream serving on (\d+)")
_PUT_BYTES = re.compile(
    r'^dask_compute_received_bytes_total\{method="PutObject"\} (\S+)$', re.MULTILINE
)


def run(quick: bool, workers: int, threads: int) -> list[Row]:
    """Start the service and the floor, measure both, and return the table's rows."""
    from bench import processes
    from bench.stream import CHUNK_BYTES, StreamClient
    from client_sdk import ComputeClient

    nbytes, n_jobs, repeats = SIZES["quick" if quick else "full"]
    metrics_port = processes.free_port()
    args = [
        *processes.cluster_args(workers, threads),
        "--job-store",
        "memory",
        # The floor's chunk size, whatever the default becomes.
        "--result-chunk-bytes",
        str(CHUNK_BYTES),
        "--max-object-bytes",
        str(4 * nbytes),
        "--metrics-port",
        str(metrics_port),
    ]
    floor_command = [sys.executable, "-m", "bench.stream"]
    with (
        processes.process(floor_command, _STREAM, timeout=60) as floor_server,
        processes.server(args) as service,
        ComputeClient(service.target, timeout=120) as client,
    ):
        stream = StreamClient(int(floor_server.match.group(1)))
        try:
            return _measure(client, stream, service.pid, metrics_port, nbytes, n_jobs, repeats)
        finally:
            stream.close()


def _measure(
    client: Any, stream: Any, pid: int, metrics_port: int, nbytes: int, n_jobs: int, repeats: int
) -> list[Row]:
    from bench.data_tasks import make_array

    # Warm both paths up: workers import numpy and bench, the streams open.
    stream.download(4 * MIB)
    stream.upload(4 * MIB)
    client.submit(make_array, 4 * MIB).result(timeout=120)
    rows = _download_rows(client, stream, pid, nbytes, repeats)
    rows += _upload_rows(client, stream, pid, metrics_port, nbytes, n_jobs, repeats)
    return rows


def _download_rows(client: Any, stream: Any, pid: int, nbytes: int, repeats: int) -> list[Row]:
    """A finished job's large result through the SDK, the floor, and a bare GetJobResult."""
    floor, sdk, growth, before, first_byte, raw = [], [], [], [], [], []
    for _ in range(repeats):
        floor.append(_timed(lambda: _check_count(stream.download(nbytes), nbytes))[0])
        seconds, rss_before, rss_peak = _fetch_result(client, pid, nbytes)
        sdk.append(seconds)
        growth.append(rss_peak - rss_before)
        before.append(rss_before)
        header_seconds, total_seconds = _bare_fetch(client, nbytes)
        first_byte.append(header_seconds)
        raw.append(total_seconds)
    floor_rate = _rate(nbytes, statistics.median(floor))
    sdk_rate = _rate(nbytes, statistics.median(sdk))
    ratio = sdk_rate / floor_rate
    worst = max(range(repeats), key=lambda i: growth[i])
    multiple = growth[worst] / nbytes
    server_part = statistics.median(first_byte)
    stream_part = statistics.median(raw) - server_part
    client_part = max(statistics.median(sdk) - statistics.median(raw), 0.0)
    return [
        Row(
            f"{nbytes // MIB} MiB NumPy result via GetJobResult (finished job), "
            f"median of {repeats}",
            f"{sdk_rate:,.0f} MB/s",
            f"floor {floor_rate:,.0f} MB/s",
            f"{ratio:.2f}x floor",
            ">= 0.5x floor",
            judge(ratio, 0.5, True),
        ),
        Row(
            "  where its time goes: server to header, stream, SDK's own",
            f"{server_part:.3f} s + {stream_part:.3f} s + {client_part:.3f} s",
            f"floor {statistics.median(floor):.3f} s",
        ),
        Row(
            "  server's peak RSS growth while streaming it (worst repeat)",
            f"{growth[worst] / MIB:,.0f} MiB over {before[worst] / MIB:,.0f} MiB",
            "",
            f"{multiple:.2f}x result",
            "< 1.5x result",
            judge(multiple, 1.5),
        ),
    ]


def _upload_rows(
    client: Any, stream: Any, pid: int, metrics_port: int, nbytes: int, n_jobs: int, repeats: int
) -> list[Row]:
    """An upload through the SDK and the floor, then its reuse without a second upload."""
    from bench.data_tasks import make_array, total

    floor, sdk, growth, sent = [], [], [], 0.0
    array, ref = None, None
    for index in range(repeats):
        if ref is not None:
            client.delete_object(ref)
        # Different content each time: an object the server holds is not sent again.
        array = make_array(nbytes)
        array[0] = index + 1
        floor.append(_timed(lambda: _check_count(stream.upload(nbytes), nbytes))[0])
        put_before = _put_object_bytes(metrics_port)
        with _watch_rss(pid) as rss:
            seconds, ref = _timed(lambda a=array: client.scatter(a))
        sdk.append(seconds)
        growth.append(rss["peak"] - rss["before"])
        sent = _put_object_bytes(metrics_port) - put_before
    assert array is not None and ref is not None
    floor_rate = _rate(nbytes, statistics.median(floor))
    sdk_rate = _rate(nbytes, statistics.median(sdk))
    rows = [
        Row(
            f"{nbytes // MIB} MiB upload via PutObject (client.scatter), median of {repeats}",
            f"{sdk_rate:,.0f} MB/s ({sent / MIB:,.0f} MiB sent)",
            f"floor {floor_rate:,.0f} MB/s",
            f"{sdk_rate / floor_rate:.2f}x floor",
        ),
        Row(
            "  server's peak RSS growth during the upload (worst repeat)",
            f"{max(growth) / MIB:,.0f} MiB",
            "",
            f"{max(growth) / nbytes:.2f}x object",
        ),
    ]

    expected = int(array.sum())
    put_before = _put_object_bytes(metrics_port)
    again_seconds, again = _timed(lambda: client.scatter(array))
    if again != ref:
        raise AssertionError(f"the same array scattered again gave {again}, not {ref}")
    jobs_seconds, sums = _timed(lambda: client.gather(client.map(total, [ref] * n_jobs)))
    if sums != [expected] * n_jobs:
        raise AssertionError(f"jobs on the uploaded array summed {sums}, not {expected}")
    resent = _put_object_bytes(metrics_port) - put_before
    verdict = "ok" if resent == 0 else "MISSED"
    rows.append(
        Row(
            "  the same array scattered again (no upload)",
            f"{again_seconds:.3f} s, {resent / MIB:,.0f} MiB sent",
            "",
            f"{again_seconds / statistics.median(sdk):.2f}x upload",
            "0 bytes sent again",
            verdict,
        )
    )
    rows.append(
        Row(
            f"  {n_jobs} jobs taking the reference (sum), map + gather",
            f"{jobs_seconds:.3f} s ({n_jobs / jobs_seconds:,.1f} jobs/s)",
            "",
            "",
            "no re-upload, sums right",
            verdict,
        )
    )
    client.delete_object(ref)
    return rows


def _fetch_result(client: Any, pid: int, nbytes: int) -> tuple[float, int, int]:
    """Time ``result()`` of a finished job's large result; (seconds, RSS before, peak RSS)."""
    from bench.data_tasks import expected_sum, make_array

    job = client.submit(make_array, nbytes)
    error = job.exception(timeout=300)  # waits for the job; its result stays on the cluster
    if error is not None:
        raise error
    with _watch_rss(pid) as rss:
        seconds, value = _timed(job.result)
    right = value.dtype == "int64" and value.nbytes == nbytes
    if not (right and int(value.sum()) == expected_sum(nbytes)):
        raise AssertionError(f"the result is not make_array({nbytes}): {value!r}")
    return seconds, rss["before"], rss["peak"]


def _bare_fetch(client: Any, nbytes: int) -> tuple[float, float]:
    """A finished job's result read by a bare ``GetJobResult`` stream, without the SDK.

    Returns:
        Seconds to the header (the server fetches the value from its worker
        and encodes it first) and to the last chunk.
    """
    import grpc

    from bench.data_tasks import make_array
    from client_sdk._proto.compute.v1 import compute_pb2 as pb
    from client_sdk._proto.compute.v1 import compute_pb2_grpc as pb_grpc

    job = client.submit(make_array, nbytes)
    error = job.exception(timeout=300)
    if error is not None:
        raise error
    options = [("grpc.max_receive_message_length", 64 * MIB)]
    with grpc.insecure_channel(client.target, options=options) as channel:
        stub = pb_grpc.ComputeServiceStub(channel)
        request = pb.GetJobResultRequest(job_id=job.job_id, release=True, checksum_last=True)
        start = time.perf_counter()
        header, received = 0.0, 0
        for message in stub.GetJobResult(request, timeout=300):
            if message.WhichOneof("part") == "header":
                header = time.perf_counter() - start
            else:
                received += len(message.chunk)
        seconds = time.perf_counter() - start
    if received < nbytes:
        raise AssertionError(f"GetJobResult sent {received} bytes, fewer than {nbytes}")
    return header, seconds


@contextlib.contextmanager
def _watch_rss(pid: int) -> Iterator[dict[str, int]]:
    """Sample a process's RSS every :data:`SAMPLE_EVERY` s in a thread until the block ends.

    Yields a dict whose ``before`` is the RSS on entry; ``peak`` is set on exit.
    """
    import psutil

    process = psutil.Process(pid)
    first = process.memory_info().rss
    seen = {"before": first, "peak": first}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            seen["peak"] = max(seen["peak"], process.memory_info().rss)
            stop.wait(SAMPLE_EVERY)

    sampler = threading.Thread(target=sample, name="bench-rss", daemon=True)
    sampler.start()
    try:
        yield seen
    finally:
        stop.set()
        sampler.join()
        seen["peak"] = max(seen["peak"], process.memory_info().rss)


def _timed(call: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    value = call()
    return time.perf_counter() - start, value


def _check_count(received: int, nbytes: int) -> int:
    if received != nbytes:
        raise AssertionError(f"the floor moved {received} bytes, not {nbytes}")
    return received


def _rate(nbytes: int, seconds: float) -> float:
    """Megabytes (10^6 bytes) per second."""
    return nbytes / seconds / 1e6


def _put_object_bytes(port: int) -> float:
    """The server's count of bytes received by PutObject (its Prometheus metric)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    match = _PUT_BYTES.search(text)
    return float(match.group(1)) if match else 0.0
