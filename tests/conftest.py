"""Session fixtures: one real server on one real LocalCluster, shared by the tests.

The session server runs ``dask-compute serve --n-workers 2 --threads-per-worker 2``
(worker processes, spawned) on a free port; tests that need another shape start
their own with :func:`tests.helpers.running_server`.
"""

from __future__ import annotations

import pytest

from tests.helpers import RunningServer, start_server

SESSION_SERVER_ARGS = (
    "--n-workers", "2",
    "--threads-per-worker", "2",
    "--dashboard-address", ":0",
    "--local-processes", "2",
    "--functions", "tests.functions",
)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> RunningServer:
    """The session's server process."""
    log = tmp_path_factory.mktemp("server") / "server.log"
    srv = start_server(SESSION_SERVER_ARGS, log)
    yield srv
    code = srv.stop()
    assert code == 0, f"session server exited with {code}:\n{srv.log()[-3000:]}"


@pytest.fixture
def client(server: RunningServer):
    """A connected :class:`client_sdk.ComputeClient`."""
    from client_sdk import ComputeClient

    with ComputeClient(server.target, timeout=60) as c:
        yield c
