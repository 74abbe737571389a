"""``python -m bench [--quick]``: the service against direct Dask, one table.

In one run, on one machine, with the same cluster shape on both sides (a
``dask-compute serve`` subprocess and an in-process ``LocalCluster`` with a
default ``distributed.Client``), it measures:

- the transport floor: a bare ``grpc.aio`` unary echo;
- the round trip of a trivial job on ``distributed`` (``run("ping")`` and
  ``submit(inc).result()`` against ``Client.submit(inc).result()``), p50 and
  p99, and on the ``threads`` and ``synchronous`` schedulers against the echo;
- where a ``distributed`` round trip's time goes: gRPC, the service, Dask;
- a batch: ``client.map`` of trivial calls plus ``gather``, calls per second;
- 64 concurrent callers: jobs per second, p50, p99 and errors;
- one Dask array reduction through each scheduler, service against
  ``dask.compute``.

Figures are medians of many calls, but other work on the machine moves them:
compare the two sides of a row, measured moments apart, rather than runs.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import platform
import sys
import time
from typing import Any

logger = logging.getLogger(__name__)

#: (calls per round trip, batch size, calls per concurrent caller, array size, chunk, repeats)
SIZES = {
    "full": (1000, 10_000, 20, 4000, 1000, 3),
    "quick": (100, 500, 2, 800, 200, 1),
}
CALLERS = 64
SCHEDULERS = ("distributed", "threads", "processes", "synchronous")


@dataclasses.dataclass
class Row:
    """One line of the table."""

    measure: str
    service: str
    direct: str = ""
    ratio: str = ""
    target: str = ""
    verdict: str = ""


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def _latency(lat: Any) -> str:
    return f"p50 {_ms(lat.p50)}  p99 {_ms(lat.p99)}"


def _concurrency(lat: Any) -> str:
    return f"{lat.rate:,.0f} jobs/s  {_latency(lat)}  errors {lat.errors}"


def _judge(value: float, limit: float, higher_is_better: bool = False) -> str:
    met = value >= limit if higher_is_better else value <= limit
    return "ok" if met else "MISSED"


def run(quick: bool, workers: int, threads: int) -> list[Row]:
    """Start both sides, measure everything, and return the table's rows."""
    import dask
    from distributed import Client, LocalCluster

    from bench import measure, processes
    from bench.echo import EchoClient
    from bench.tasks import inc
    from client_sdk import AsyncComputeClient, ComputeClient

    calls, batch_n, per_caller, size, chunk, repeats = SIZES["quick" if quick else "full"]
    rows: list[Row] = []
    with processes.echo_server() as echo_port, processes.service(workers, threads) as target:
        echo = EchoClient(echo_port)
        floor = measure.sequential(echo.echo, max(calls, 500))
        echo.close()
        rows.append(Row("transport floor: bare gRPC unary echo", _latency(floor)))

        with (
            LocalCluster(
                n_workers=workers,
                threads_per_worker=threads,
                processes=True,
                dashboard_address=None,
            ) as cluster,
            Client(cluster) as direct,
            ComputeClient(target, timeout=120) as client,
        ):
            client.info()
            direct_rt = measure.sequential(
                lambda: direct.submit(inc, 1, pure=False).result(), calls
            )
            ping = measure.sequential(lambda: client.run("ping"), calls)
            submit = measure.sequential(lambda: client.submit(inc, 1).result(), calls)
            rows.append(
                Row(f"trivial job, distributed ({calls} sequential calls)", "", _latency(direct_rt))
            )
            for label, lat in (
                ('  service run("ping")', ping),
                ("  service submit(inc).result()", submit),
            ):
                ratio = lat.p50 / direct_rt.p50
                rows.append(
                    Row(
                        label, _latency(lat), "", f"{ratio:.2f}x p50", "<= 1.0x", _judge(ratio, 1.0)
                    )
                )

            local = {}
            for scheduler in ("threads", "synchronous"):
                local[scheduler] = lat = measure.sequential(
                    lambda s=scheduler: client.run("ping", scheduler=s), calls
                )
                ratio = lat.p50 / floor.p50
                rows.append(
                    Row(
                        f'trivial job, {scheduler} run("ping")',
                        _latency(lat),
                        f"echo {_ms(floor.p50)}",
                        f"{ratio:.2f}x echo",
                        "<= 2x echo",
                        _judge(ratio, 2.0),
                    )
                )
            grpc_part = floor.p50
            ours = max(local["threads"].p50 - floor.p50, 0.0)
            dask_part = max(ping.p50 - local["threads"].p50, 0.0)
            rows.append(
                Row(
                    "  where a distributed ping's p50 goes",
                    f"gRPC {_ms(grpc_part)} + service {_ms(ours)} + Dask {_ms(dask_part)}",
                )
            )

            service_rate = measure.batch(
                lambda n: client.gather(client.map(inc, range(n))), batch_n
            )
            direct_rate = measure.batch(
                lambda n: direct.gather(direct.map(inc, range(n), pure=False)), batch_n
            )
            ratio = service_rate / direct_rate
            rows.append(
                Row(
                    f"batch: map + gather of {batch_n:,} trivial calls",
                    f"{service_rate:,.0f} calls/s",
                    f"{direct_rate:,.0f} calls/s",
                    f"{ratio:.2f}x",
                    ">= 0.9x",
                    _judge(ratio, 0.9, True),
                )
            )

            direct_many = measure.threaded(
                lambda: direct.submit(inc, 1, pure=False).result(), CALLERS, per_caller
            )
            sync_many = measure.threaded(lambda: client.run("ping"), CALLERS, per_caller)

            async def async_callers() -> Any:
                async with AsyncComputeClient(target, timeout=120) as aclient:
                    await aclient.run("ping")
                    return await measure.concurrent(
                        lambda: aclient.run("ping"), CALLERS, per_caller
                    )

            async_many = asyncio.run(async_callers())
            rows.append(
                Row(
                    f"{CALLERS} concurrent callers x {per_caller} calls (threads)",
                    "",
                    _concurrency(direct_many),
                )
            )
            for label, lat in (
                ("  service, blocking client in threads", sync_many),
                ("  service, AsyncComputeClient tasks", async_many),
            ):
                spread = lat.p99 / lat.p50
                ok = lat.errors == 0 and spread <= 5
                rows.append(
                    Row(
                        label,
                        _concurrency(lat),
                        "",
                        f"{lat.rate / direct_many.rate:.2f}x jobs/s",
                        "0 errors, p99 <= 5x p50",
                        "ok" if ok else f"MISSED (p99 {spread:.1f}x p50)",
                    )
                )

            reduction = measure.array_reduction(size, chunk)
            rows.append(
                Row(f"array reduction ({size}x{size}, chunks {chunk}), best of {repeats}", "")
            )
            for scheduler in SCHEDULERS:
                remote = measure.best_of(
                    lambda s=scheduler: client.compute(reduction, scheduler=s), repeats
                )
                local_scheduler: Any = direct if scheduler == "distributed" else scheduler
                here = measure.best_of(
                    lambda s=local_scheduler: dask.compute(reduction, scheduler=s), repeats
                )
                rows.append(
                    Row(
                        f"  {scheduler}",
                        f"{remote:.3f} s",
                        f"{here:.3f} s",
                        f"{remote / here:.2f}x",
                    )
                )
    return rows


def render(rows: list[Row]) -> str:
    """The rows as an aligned text table."""
    header = Row("measure", "service (SDK)", "direct Dask", "ratio", "target", "")
    table = [header, *rows]
    fields = [f.name for f in dataclasses.fields(Row)]
    widths = {f: max(len(getattr(r, f)) for r in table) for f in fields}
    lines = []
    for index, row in enumerate(table):
        lines.append("  ".join(getattr(row, f).ljust(widths[f]) for f in fields).rstrip())
        if index == 0:
            lines.append("  ".join("-" * widths[f] for f in fields).rstrip())
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="a short run (what the test suite runs)"
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="Dask workers on each side (default 2)"
    )
    parser.add_argument("--threads", type=int, default=1, help="threads per worker (default 1)")
    args = parser.parse_args(argv)
    import dask
    import distributed  # noqa: F401  (its import sets its own log levels; ours come after)

    logging.basicConfig(level=logging.WARNING)
    for name in ("distributed", "dask"):
        logging.getLogger(name).setLevel(logging.ERROR)

    mode = "quick" if args.quick else "full"
    start, load = time.perf_counter(), os.getloadavg()[0]
    rows = run(args.quick, args.workers, args.threads)
    print(
        f"Dask Compute Service benchmark ({mode}): {args.workers} worker processes x "
        f"{args.threads} thread on each side; {os.cpu_count()} CPUs; python "
        f"{platform.python_version()}, dask {dask.__version__}"
    )
    print(render(rows))
    print(
        f"took {time.perf_counter() - start:.1f}s; load average {load:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end (other work on the machine moves every figure)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
