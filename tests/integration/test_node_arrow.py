"""A Node.js client (grpc-js + apache-arrow) reads a Dask DataFrame result as Arrow."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.integration

CLIENT = ROOT / "tests" / "node" / "arrow_client.js"


def _node(target, *args):
    node = shutil.which("node")
    assert node, "Node.js is missing: .ci/install-tools.sh installs it"
    assert (CLIENT.parent / "node_modules" / "apache-arrow").exists(), "run .ci/install-tools.sh"
    return subprocess.run(
        [node, str(CLIENT), target, *args], capture_output=True, text=True, timeout=120
    )


def test_node_reads_a_dataframe_result_as_arrow(local_server):
    result = _node(local_server.target, "frame", json.dumps({"rows": 9}))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["format"] == "RESULT_FORMAT_ARROW" and data["streamed"] is False
    assert data["columns"] == ["group", "value"]
    assert data["rows"] == [
        {"group": "g0", "value": 0 + 3 + 6},
        {"group": "g1", "value": 1 + 4 + 7},
        {"group": "g2", "value": 2 + 5 + 8},
    ]


def test_node_reads_a_large_table_through_the_result_stream(local_server):
    result = _node(local_server.target, "frame", json.dumps({"rows": 200_000, "aggregate": False}))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["streamed"] is True, "over the inline limit, the table comes through GetJobResult"
    rows = data["rows"]
    assert len(rows) == 200_000
    assert sum(r["value"] for r in rows) == sum(range(200_000))
    assert rows[4] == {"group": "g1", "value": 4}


def test_non_tabular_result_has_no_arrow_form(local_server):
    result = _node(local_server.target, "ping")
    assert result.returncode == 2
    assert "is not a table, so it has no Arrow form" in result.stderr
