"""The benchmark's table: rows, their formatting, and the verdict on a target.

Every section of the benchmark (:mod:`bench.core`, :mod:`bench.data`, ...)
returns a list of :class:`Row`; :mod:`bench.__main__` prints them as one table.
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass
class Row:
    """One line of the table."""

    measure: str
    service: str
    direct: str = ""
    ratio: str = ""
    target: str = ""
    verdict: str = ""


def ms(seconds: float) -> str:
    """Seconds as milliseconds with two decimals."""
    return f"{seconds * 1000:.2f} ms"


def latency(lat: Any) -> str:
    """A :class:`bench.measure.Latency` as its p50 and p99."""
    return f"p50 {ms(lat.p50)}  p99 {ms(lat.p99)}"


def concurrency(lat: Any) -> str:
    """A concurrent run: its rate, percentiles and errors."""
    return f"{lat.rate:,.0f} jobs/s  {latency(lat)}  errors {lat.errors}"


def judge(value: float, limit: float, higher_is_better: bool = False) -> str:
    """``ok`` when ``value`` meets ``limit``, else ``MISSED``."""
    met = value >= limit if higher_is_better else value <= limit
    return "ok" if met else "MISSED"


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
