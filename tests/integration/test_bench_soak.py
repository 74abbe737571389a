"""``python -m bench --quick --section soak`` runs end to end and accounts for every job.

The soak's figures (throughput, latencies, memory) move with other work on the
machine and are not judged here; what is judged is that every row is there and
well formed, that workers were killed and came back, and that no job the
service accepted was lost or left queued or running.
"""

from __future__ import annotations

import re

import pytest

from tests.helpers import run_bench

pytestmark = [pytest.mark.integration, pytest.mark.slow]

INT = r"[\d,]+"


def test_quick_soak_accounts_for_every_job() -> None:
    out, took = run_bench("soak", timeout=280)
    seed = re.search(
        r"^soak: seed (\d+) \(BENCH_SOAK_SEED=\1 replays the mix\), job records in sqlite$",
        out,
        re.MULTILINE,
    )
    assert seed, out
    assert "Dask Compute Service benchmark (quick): 2 worker processes" in out

    def row(label: str) -> str:
        match = re.search(rf"^{re.escape(label)}.*$", out, re.MULTILINE)
        assert match, f"no row {label!r} in:\n{out}"
        return match.group(0)

    head = re.search(
        rf"^16 callers, (\d+) s of mixed load \(seed {seed.group(1)}\)\s+({INT}) jobs accepted, "
        r"[\d,.]+ jobs/s$",
        row("16 callers"),
    )
    assert head, row("16 callers")
    accepted = int(head.group(2).replace(",", ""))
    assert accepted >= 50, "the callers hardly ran"

    # The verdicts that matter: nothing lost or stuck, every failure and cancel explained.
    lost = row("  lost, or queued/running after settling")
    assert re.search(
        rf"0 lost, 0 stuck \(server counted {INT} accepted, lists {INT}\)\s+0\s+ok$", lost
    ), lost + "\n" + out
    by_state = {}
    for state in ("succeeded", "failed, with a reason", "cancelled, with a reason"):
        match = re.search(rf"^  {state}\s+({INT})", row(f"  {state}"))
        assert match, row(f"  {state}")
        by_state[state] = int(match.group(1).replace(",", ""))
    assert sum(by_state.values()) == accepted, by_state
    assert all(by_state.values()), f"every final state should occur in the mix: {by_state}"

    assert re.search(r"\s0\s+0\s+ok$", row("  failed or cancelled without a reason"))
    assert re.search(r"ended otherwise than its kind expects\s+\d+", out)
    assert re.search(r"calls refused, timed out, or cut off before a job.*\s+\d+", out)
    assert re.search(
        rf"trivial job round trip \({INT} pings\)\s+p50 [\d.]+ ms  p99 [\d.]+ ms  max [\d.]+ s$",
        row("  trivial job round trip"),
    )
    # Each scheduler's pings, the local ones judged against a p99 target, and
    # where the slowest 1% spent their time.
    assert re.search(r"on distributed \({INT}\)\s+p50 [\d.]+ ms".replace("{INT}", INT), out)
    for local in ("threads", "processes", "synchronous"):
        judged = re.search(
            rf"on {local} \({INT}\)\s+p50 [\d.]+ ms  p99 [\d.]+ ms  max [\d.]+ s\s+"
            r"p99 <= 1 s\s+(ok|MISSED)$",
            out,
            re.MULTILINE,
        )
        assert judged, out
    assert re.search(r"slowest 1% \(.*\)\s+queued [\d.]+ ms, ran [\d.]+ ms, after", out)
    assert re.search(
        r"ListFunctions, once a second \(\d+ calls\)\s+p50 [\d.]+ ms  p99 [\d.]+ ms  max [\d.]+ s$",
        row("  ListFunctions, once a second"),
    )
    killed = re.search(
        r"Dask worker processes killed \(SIGKILL\)\s+(\d+); 2/2 workers back after\s+"
        r">= 1, all back\s+ok$",
        row("Dask worker processes killed"),
    )
    assert killed and int(killed.group(1)) >= 1, row("Dask worker processes killed")
    assert re.search(
        r"[\d.]+ -> [\d.]+ MiB \(peak [\d.]+\)\s+[+-][\d.]+ MiB \([+-][\d.]+%; [+-][\d.]+ KiB/job\)"
        r"\s+growth < 50 MiB\s+(ok|MISSED)$",
        row("server RSS after warm-up -> end"),
    )
    assert took < 240, f"the quick soak took {took:.0f}s"
