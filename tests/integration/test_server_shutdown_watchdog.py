"""A stopped server whose close hangs still exits: its stacks go to its log, its status is 1.

A close that never returns (a database connection that never answers, say)
must not keep a server that was told to stop up for ever: past the shutdown
grace plus ``server.app.SHUTDOWN_WATCHDOG`` seconds, faulthandler writes every
thread's stack to stderr and the process exits.
"""

from __future__ import annotations

import signal

import pytest

from tests.helpers import ROOT, start_server

pytestmark = pytest.mark.integration

#: Loaded before the server starts: its core's close hangs, the watchdog is short.
HANGING_CLOSE = """\
import asyncio
import server.app
import server.core


async def _hang(self):
    await asyncio.sleep(3600)


server.core.ComputeCore.close = _hang
server.app.SHUTDOWN_WATCHDOG = 2.0
"""

ARGS = [
    "--n-workers", "1", "--threads-per-worker", "1", "--no-processes",
    "--dashboard-address", "", "--local-processes", "1", "--shutdown-grace", "1",
]  # fmt: skip


def test_a_server_whose_close_hangs_exits_with_its_stacks_in_the_log(tmp_path):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HANGING_CLOSE)
    env = {
        "PYTHONPATH": f"{hook}:{ROOT}",
        "DASK_COMPUTE_JOB_STORE": f"sqlite:///{tmp_path / 'jobs.db'}",
    }
    server = start_server(ARGS, tmp_path / "serve.log", env=env)
    code = server.stop(signal.SIGTERM, timeout=30)
    log = server.log()
    assert code == 1, f"exit status {code}:\n{log[-2000:]}"
    assert "Thread 0x" in log and "_hang" in log, "every thread's stack is in the log"
