"""Session fixtures: the servers the tests share, each on one real LocalCluster.

- ``local_server`` / ``local_client``: the real core, cluster and gRPC server in
  the test process (``server.app.build_server`` on 127.0.0.1:0), for tests that
  need no server process of their own. Most integration tests use it.
- ``server`` / ``client``: a ``dask-compute serve`` process of the same shape,
  for tests that need the server apart from the test process: what the server
  has imported or keeps in its process (modules only one side has, its threads,
  a cancelled job's thread that runs on), or what the command line does.

Both have two worker processes (spawned) of two threads each, two pool
processes, and the functions of ``tests.functions``. Tests that need another
shape, flags, signals or a restart start their own with
:func:`tests.helpers.running_server` or :func:`tests.helpers.serving_in_process`.
"""

from __future__ import annotations

import pytest

from tests.diagnostics import suspended_server_coroutines
from tests.helpers import (
    LocalServer,
    RunningServer,
    local_settings,
    serving_in_process,
    start_server,
)

#: The flags of tests.helpers.SESSION_SHAPE, which the in-process server is built with.
SESSION_SERVER_ARGS = (
    "--n-workers", "2",
    "--threads-per-worker", "2",
    "--dashboard-address", ":0",
    "--local-processes", "2",
    "--functions", "tests.functions",
)  # fmt: skip


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A failed test of the in-process server reports what that server waits on."""
    report = yield
    if report.failed and "local_server" in getattr(item, "fixturenames", ()):
        report.sections.append(("in-process server: suspended", suspended_server_coroutines()))
    return report


@pytest.fixture(scope="session")
def local_server(tmp_path_factory: pytest.TempPathFactory) -> LocalServer:
    """The session's in-process server."""
    with serving_in_process(local_settings(tmp_path_factory.mktemp("local-server"))) as srv:
        yield srv


@pytest.fixture
def local_client(local_server: LocalServer):
    """A :class:`client_sdk.ComputeClient` connected to :func:`local_server`."""
    from client_sdk import ComputeClient

    with ComputeClient(local_server.target, timeout=60) as c:
        yield c


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
