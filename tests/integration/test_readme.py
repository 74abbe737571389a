"""The README's grpcurl session, run as written with the real grpcurl against a real server.

The session in README.md talks to localhost:50051, the port `make serve` listens on, so
this test starts a server there. Expected output lines are matched in order; a line
with "..." in it stands for lines left out (or, inside a line, for any text).
"""

from __future__ import annotations

import os
import pathlib
import re
import shlex
import socket
import subprocess
import sys

import pytest

from tests.helpers import ROOT, running_server

pytestmark = pytest.mark.integration

README = ROOT / "README.md"
BIN = pathlib.Path(sys.executable).parent


def _session() -> list[tuple[str, list[str]]]:
    text = README.read_text()
    block = (
        text.split("<!-- grpcurl-session -->", 1)[1].split("```console\n", 1)[1].split("```", 1)[0]
    )
    steps: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif steps and line.strip():
            steps[-1][1].append(line)
    return steps


def _matches(expected: list[str], actual: str) -> str | None:
    """None when every expected line appears in order in ``actual``; else what is missing."""
    lines = actual.splitlines()
    position = 0
    for want in expected:
        if want.strip() == "...":
            continue
        pattern = re.compile("^" + ".*".join(re.escape(part) for part in want.split("...")) + "$")
        while position < len(lines) and not pattern.match(lines[position]):
            position += 1
        if position == len(lines):
            return want
        position += 1
    return None


def test_readme_has_a_grpcurl_session_covering_the_basics():
    commands = [command for command, _ in _session()]
    joined = "\n".join(commands)
    for needed in (
        " list",
        " describe ",
        "/GetClusterInfo",
        '"function": "add"',
        '"function": "pi"',
    ):
        assert needed in joined, f"README grpcurl session lacks {needed!r}"


def test_readme_grpcurl_session_runs_as_written(tmp_path):
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 50051)) == 0:
            pytest.fail("port 50051 is taken; stop the server on it to run the README session")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    args = [
        "--port",
        "50051",
        "--n-workers",
        "2",
        "--threads-per-worker",
        "1",
        "--dashboard-address",
        "",
    ]
    log = tmp_path / "server.log"
    with running_server(args, log, port_flag=False) as server:
        assert server.port == 50051
        for command, expected in _session():
            assert shlex.split(command)[0] == "grpcurl"
            result = subprocess.run(
                command, shell=True, env=env, capture_output=True, text=True, timeout=120
            )
            output = result.stdout + result.stderr
            missing = _matches(expected, output)
            assert missing is None, f"$ {command}\nexpected line {missing!r} in:\n{output}"
            failed = expected and expected[0] == "ERROR:"
            assert (result.returncode != 0) == bool(failed), (
                f"$ {command}\nexit {result.returncode}:\n{output}"
            )
