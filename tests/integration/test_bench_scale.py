"""``python -m bench --quick --section scale`` runs end to end, so the scale section cannot rot.

It starts a real ``dask scheduler``, two ``dask worker`` processes, two
service replicas (sharing PostgreSQL when it is installed) and a direct
client; the figures are not judged here (other work on the machine moves
them), only that every row is measured, sensibly, and without errors.
"""

from __future__ import annotations

import re

import pytest

from tests.helpers import run_bench

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RATE = r"[\d,]+ jobs/s  p50 (\d+\.\d\d) ms  p99 (\d+\.\d\d) ms  errors 0"
CPU = (
    r"scheduler \d+\.\d, workers \d+\.\d, replicas \d+\.\d(, PostgreSQL \d+\.\d)?, "
    r"callers \d+\.\d ms; machine \d+% of \d+% busy$"
)

MEANING = r"says\s+(>=1\.3x|1\.1x to 1\.3x|~1\.0x|<0\.9x)( \(rounds [^)]*\))?[:;,] \w"


def test_quick_scale_section_prints_every_row() -> None:
    out, _ = run_bench("scale", timeout=240)
    lines = out.splitlines()

    def row(label: str, start: int = 0) -> tuple[int, str]:
        for index in range(start, len(lines)):
            if lines[index].startswith(label):
                return index, lines[index]
        raise AssertionError(f"no row {label!r} after line {start} in:\n{out}")

    def percentiles(line: str) -> None:
        match = re.search(RATE, line)
        assert match, line
        assert 0 < float(match.group(1)) <= float(match.group(2)), line

    _, cluster = row("external cluster: dask scheduler + 2 dask workers x 1 thread")
    store = re.search(r"job store: (PostgreSQL|memory)", cluster)
    assert store, cluster
    name = store.group(1)

    at, direct = row("64 callers x 2 calls, direct Dask submit(inc).result() (threads)")
    percentiles(direct)
    at, cpu = row("    CPU per job", at)
    assert re.search(CPU, cpu), cpu
    for job in ('run("ping")', "submit(inc, 1).result()"):
        at, _ = row(f"{job}, 64 AsyncComputeClient callers x 2 calls", at)
        at, one = row(f"  1 replica ({name}), 64 callers", at)
        percentiles(one)
        assert re.search(r"\d+\.\d\dx direct\s+0 errors\s+ok$", one), one
        at, cpu = row("    CPU per job", at)
        assert re.search(CPU, cpu), cpu
        at, two = row(f"  2 replicas ({name}), 32 + 32 callers", at)
        percentiles(two)
        ratio = re.search(r"(\d+\.\d\d)x 1 replica\s+0 errors\s+ok$", two)
        assert ratio and float(ratio.group(1)) > 0, two
        at, cpu = row("    CPU per job", at)
        assert re.search(CPU, cpu), cpu
        at, meaning = row(f"  what {ratio.group(1)}x says", at)
        assert re.search(MEANING, meaning), meaning
    took = float(re.search(r"^took (\d+\.\d)s", out, re.MULTILINE).group(1))
    assert took < 90, f"the quick scale section took {took}s"
