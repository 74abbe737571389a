"""``python -m bench --quick`` runs end to end, so the benchmark suite cannot rot.

It starts its own server and LocalCluster; the figures are not judged here
(other work on the machine moves them), only that every row is measured,
sensibly, and without errors.
"""

from __future__ import annotations

import re

import pytest

from tests.helpers import run_bench

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MS = r"p50 (\d+\.\d\d) ms  p99 (\d+\.\d\d) ms"


def test_quick_benchmark_prints_every_row() -> None:
    out, _ = run_bench("core", timeout=240)

    def row(label: str) -> str:
        match = re.search(rf"^{re.escape(label)}.*$", out, re.MULTILINE)
        assert match, f"no row {label!r} in:\n{out}"
        return match.group(0)

    floor = re.search(MS, row("transport floor: bare gRPC unary echo"))
    assert floor and 0 < float(floor.group(1)) <= float(floor.group(2))
    assert re.search(MS, row("trivial job, distributed (100 sequential calls)"))
    for label in ('  service run("ping")', "  service submit(inc).result()"):
        assert re.search(MS + r".*\d+\.\d\dx p50\s+<= 1\.0x\s+(ok|MISSED)$", row(label))
    for scheduler in ("threads", "synchronous"):
        assert re.search(
            r"\d+\.\d\dx echo\s+<= 2x echo", row(f'trivial job, {scheduler} run("ping")')
        )
    assert re.search(
        r"gRPC \d+\.\d\d ms \+ service \d+\.\d\d ms \+ Dask \d+\.\d\d ms",
        row("  where a distributed ping's p50 goes"),
    )
    assert re.search(
        r"[\d,]+ calls/s\s+[\d,]+ calls/s\s+\d+\.\d\dx\s+>= 0\.9x",
        row("batch: map + gather of 500 trivial calls"),
    )
    for label in (
        "64 concurrent callers x 2 calls (threads)",
        "  service, blocking client in threads",
        "  service, AsyncComputeClient tasks",
    ):
        assert re.search(r"[\d,]+ jobs/s  " + MS + "  errors 0", row(label)), row(label)
    for scheduler in ("distributed", "threads", "processes", "synchronous"):
        assert re.search(r"\d+\.\d{3} s\s+\d+\.\d{3} s\s+\d+\.\d\dx$", row(f"  {scheduler}"))
    took = float(re.search(r"^took (\d+\.\d)s", out, re.MULTILINE).group(1))
    assert took < 120, f"the quick benchmark took {took}s"


def test_quick_tracing_benchmark_prints_every_row() -> None:
    out, _ = run_bench("tracing", timeout=240)
    assert re.search(r'^tracing: run\("ping"\), threads, 300 calls each$', out, re.MULTILINE), out
    for label in ("served: off", "in-process: off"):
        assert re.search(rf"^  {re.escape(label)}\s+{MS}$", out, re.MULTILINE), out
    for label in (
        "served: off, caller's span",
        "served: on, OTLP to a collector",
        "served: on, OTLP, caller's span",
        "in-process: on, in-memory exporter",
    ):
        line = re.search(rf"^  {re.escape(label)}\s+{MS}\s+\d+\.\d\dx off\s+<= ", out, re.MULTILINE)
        assert line, f"no row {label!r} in:\n{out}"
    # Two spans (the RPC's and the job's) per call to a traced server, warm-ups included.
    spans = re.search(
        r"^  spans made \(in memory; at the collector\)\s+([\d,]+); ([\d,]+)$", out, re.MULTILINE
    )
    assert spans, out
    in_memory, exported = (int(n.replace(",", "")) for n in spans.groups())
    assert in_memory >= 2 * 300 and exported >= 2 * 2 * 300, out
