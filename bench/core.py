"""The core section: the service's round trips, batches and concurrency against direct Dask.

In one run, on one machine, with the same cluster shape on both sides (a
``dask-compute serve`` subprocess with its default kind of job store, a SQLite
file, and an in-process ``LocalCluster`` with a default ``distributed.Client``),
it measures:

- the transport floor: a bare ``grpc.aio`` unary echo, and against it the
  round trip of a trivial job on the ``threads`` and ``synchronous``
  schedulers, p50 and p99, in alternating rounds before direct Dask starts;
- the round trip of a trivial job on ``distributed`` (``run("ping")`` and
  ``submit(inc).result()`` against ``Client.submit(inc).result()``), p50 and
  p99;
- where a ``distributed`` round trip's time goes: gRPC, the service, Dask;
- a batch: ``client.map`` of trivial calls plus ``gather``, calls per second;
- 64 concurrent callers: jobs per second, p50, p99 and errors;
- one Dask array reduction through each scheduler, service against
  ``dask.compute``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from bench.table import Row, concurrency, judge, latency, ms

logger = logging.getLogger(__name__)

#: (calls per round trip, batch size, calls per concurrent caller, array size, chunk, repeats)
SIZES = {
    "full": (1000, 10_000, 20, 4000, 1000, 3),
    "quick": (100, 500, 2, 800, 200, 1),
}
CALLERS = 64
SCHEDULERS = ("distributed", "threads", "processes", "synchronous")


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
        # The floor and the local schedulers' pings, compared as a ratio, are
        # taken in alternating rounds, before direct Dask's cluster starts in
        # this process (its threads would weigh on whichever ran beside them).
        echo = EchoClient(echo_port)
        with ComputeClient(target, timeout=120) as client:
            local = measure.interleaved(
                {
                    "echo": echo.echo,
                    "threads": lambda: client.run("ping", scheduler="threads"),
                    "synchronous": lambda: client.run("ping", scheduler="synchronous"),
                },
                max(calls, 500),
            )
        echo.close()
        floor = local.pop("echo")
        rows.append(Row("transport floor: bare gRPC unary echo", latency(floor)))

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
                Row(f"trivial job, distributed ({calls} sequential calls)", "", latency(direct_rt))
            )
            for label, lat in (
                ('  service run("ping")', ping),
                ("  service submit(inc).result()", submit),
            ):
                ratio = lat.p50 / direct_rt.p50
                rows.append(
                    Row(label, latency(lat), "", f"{ratio:.2f}x p50", "<= 1.0x", judge(ratio, 1.0))
                )

            for scheduler, lat in local.items():
                ratio = lat.p50 / floor.p50
                rows.append(
                    Row(
                        f'trivial job, {scheduler} run("ping")',
                        latency(lat),
                        f"echo {ms(floor.p50)}",
                        f"{ratio:.2f}x echo",
                        "<= 2x echo",
                        judge(ratio, 2.0),
                    )
                )
            grpc_part = floor.p50
            ours = max(local["threads"].p50 - floor.p50, 0.0)
            dask_part = max(ping.p50 - local["threads"].p50, 0.0)
            rows.append(
                Row(
                    "  where a distributed ping's p50 goes",
                    f"gRPC {ms(grpc_part)} + service {ms(ours)} + Dask {ms(dask_part)}",
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
                    judge(ratio, 0.9, True),
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
                    concurrency(direct_many),
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
                        concurrency(lat),
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
