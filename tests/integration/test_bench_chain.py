"""``python -m bench --quick --section chain`` runs end to end and prints its rows."""

from __future__ import annotations

import re

import pytest

from tests.helpers import run_bench

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_quick_chain_section_prints_every_row() -> None:
    out, _ = run_bench("chain", timeout=240)
    assert re.search(r"^\[chain\]$", out, re.MULTILINE), out
    chain = re.search(
        r"^chain of 5 jobs passing 8 MiB, distributed\s+(\S+) s\s+(\S+) s\s+\S+x\s+<= 1\.5x\s+(ok|MISSED)$",
        out,
        re.MULTILINE,
    )
    assert chain, out
    through = re.search(
        r"^  bytes through the server per chain \(RPC metrics\)\s+(\S+) MiB$", out, re.MULTILINE
    )
    assert through and float(through.group(1)) < 1.0, out  # the arrays stayed on the cluster
    assert re.search(
        r"^  download and re-upload each step \(the way before\)\s+\S+ s\s+\S+x the chain$",
        out,
        re.MULTILINE,
    ), out
