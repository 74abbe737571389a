"""``python -m bench --quick --section data`` runs end to end, so the data section cannot rot.

It starts its own server and bare streaming server; the figures are not
judged here (other work on the machine moves them), only that every row is
measured, sensibly, and that the uploaded object was reused without a second
upload (that is a fact, not a figure).
"""

from __future__ import annotations

import re

import pytest

from tests.helpers import run_bench

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RATE = r"([\d,]+) MB/s"
VERDICT = r"(ok|MISSED)"


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def test_quick_data_section_prints_every_row() -> None:
    out, _ = run_bench("data", timeout=240)
    assert re.search(r"^\[data\]$", out, re.MULTILINE), out

    def row(label: str, pattern: str) -> re.Match[str]:
        line = re.search(rf"^{re.escape(label)}.*$", out, re.MULTILINE)
        assert line, f"no row {label!r} in:\n{out}"
        match = re.search(pattern, line.group(0))
        assert match, f"row {label!r} is not {pattern!r}:\n{line.group(0)}"
        return match

    result = row(
        "32 MiB NumPy result via GetJobResult (finished job), median of 2",
        rf"{RATE}\s+floor {RATE}\s+(\d+\.\d\d)x floor\s+>= 0\.5x floor\s+{VERDICT}$",
    )
    service, floor, ratio = (_number(result.group(i)) for i in (1, 2, 3))
    assert service > 0 and floor > 0 and ratio > 0
    parts = row(
        "  where its time goes: server to header, stream, SDK's own",
        r"(\d+\.\d{3}) s \+ (-?\d+\.\d{3}) s \+ (\d+\.\d{3}) s\s+floor (\d+\.\d{3}) s$",
    )
    assert float(parts.group(1)) > 0 and float(parts.group(4)) > 0
    memory = row(
        "  server's peak RSS growth while streaming it (worst repeat)",
        rf"(-?[\d,]+) MiB over ([\d,]+) MiB\s+(-?\d+\.\d\d)x result\s+< 1\.5x result\s+{VERDICT}$",
    )
    assert _number(memory.group(2)) > 0
    upload = row(
        "32 MiB upload via PutObject (client.scatter), median of 2",
        rf"{RATE} \((\d+) MiB sent\)\s+floor {RATE}\s+(\d+\.\d\d)x floor$",
    )
    assert _number(upload.group(1)) > 0 and _number(upload.group(3)) > 0
    assert int(upload.group(2)) >= 32, "the server counted the upload's bytes"
    row(
        "  server's peak RSS growth during the upload (worst repeat)",
        r"(-?[\d,]+) MiB\s+(-?\d+\.\d\d)x object$",
    )
    again = row(
        "  the same array scattered again (no upload)",
        r"(\d+\.\d{3}) s, 0 MiB sent\s+(\d+\.\d\d)x upload\s+0 bytes sent again\s+ok$",
    )
    assert float(again.group(1)) > 0
    jobs = row(
        "  5 jobs taking the reference (sum), map + gather",
        r"(\d+\.\d{3}) s \(([\d,.]+) jobs/s\)\s+no re-upload, sums right\s+ok$",
    )
    assert float(jobs.group(1)) > 0
    took = re.search(r"^took (\d+\.\d)s", out, re.MULTILINE)
    assert took, out
    assert float(took.group(1)) < 60, f"the quick data section took {took.group(1)}s"
