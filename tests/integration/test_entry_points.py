"""Entry points: named functions (``dask_compute.functions`` and --functions) and the
commands other packages add to ``dask-compute`` (``dask_compute.commands``)."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import textwrap

import grpc
import pytest

from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk._proto.compute.v1 import compute_pb2_grpc as pb_grpc
from tests.helpers import BIN, ROOT, running_server

pytestmark = pytest.mark.integration


def test_functions_from_an_installed_package_and_a_module(tmp_path):
    site = tmp_path / "site"
    (site / "acme_jobs").mkdir(parents=True)
    (site / "acme_jobs" / "__init__.py").write_text(
        textwrap.dedent(
            '''
            from server.registry import Registry

            registry = Registry()

            @registry.function
            def shout(text: str) -> str:
                """Upper-case text."""
                return text.upper()

            def triple(x: int) -> int:
                """Three times x."""
                return 3 * x
            '''
        )
    )
    dist = site / "acme_jobs-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-jobs\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[dask_compute.functions]\nacme = acme_jobs:registry\ntriple = acme_jobs:triple\n"
    )
    (site / "local_jobs.py").write_text(
        "from server.registry import function\n\n@function\ndef halve(x: float) -> float:\n    return x / 2\n"
    )
    env = {"PYTHONPATH": f"{site}:{ROOT}"}
    args = [
        "--n-workers",
        "1",
        "--threads-per-worker",
        "1",
        "--dashboard-address",
        "",
        "--functions",
        "local_jobs",
    ]
    with running_server(args, tmp_path / "server.log", env=env) as srv:
        with grpc.insecure_channel(srv.target) as channel:
            stub = pb_grpc.ComputeServiceStub(channel)
            names = {
                f.name for f in stub.ListFunctions(pb.ListFunctionsRequest(), timeout=30).functions
            }
            results = {}
            for name, arg in (("shout", "hi"), ("triple", 5), ("halve", 5)):
                spec = pb.JobSpec(
                    call=pb.FunctionCall(function=name), scheduler=pb.SCHEDULER_DISTRIBUTED
                )
                spec.call.args.append(arg)
                response = stub.Run(pb.RunRequest(job=spec), timeout=60)
                assert response.job.state == pb.JOB_STATE_SUCCEEDED, response.job.error
                results[name] = response.result.json
    assert {"shout", "triple", "halve", "ping"} <= names
    assert results["shout"].string_value == "HI"
    assert results["triple"].number_value == 15
    assert results["halve"].number_value == 2.5


def test_unknown_functions_module_refuses_to_start(tmp_path):
    from tests.helpers import start_server

    with pytest.raises(AssertionError, match="server exited with 1"):
        start_server(
            ["--functions", "no_such_module_xyz", "--dashboard-address", ""],
            tmp_path / "log",
            timeout=60,
        )
    log = (tmp_path / "log").read_text()
    assert (
        "Error: cannot load named functions: ModuleNotFoundError: No module named 'no_such_module_xyz'"
        in log
    )
    assert "Traceback" not in log


# An install without the server package: importing it fails as it would there.
_NO_SERVER = """
import sys

class NoServer:
    def find_spec(self, name, path=None, target=None):
        if name == "server" or name.startswith("server."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoServer())
from client_sdk.cli import main
try:
    main(sys.argv[1:], prog_name="dask-compute")
finally:
    loaded = [m for m in sys.modules if m == "server" or m.startswith("server.")]
    assert not loaded, f"the server was imported: {loaded}"
"""


def _commands(help_text: str) -> list[str]:
    listing = help_text.split("\nCommands:\n", 1)[1]
    return [line.split()[0] for line in listing.splitlines() if line.startswith("  ")]


def _dask_compute(*args: str, client_only: bool = False) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", _NO_SERVER] if client_only else [str(BIN / "dask-compute")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DASK_COMPUTE_TARGET", None)
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=120, env=env, check=False
    )


def test_serve_is_the_command_the_server_package_registers() -> None:
    registered = importlib.metadata.entry_points(group="dask_compute.commands")
    assert {ep.name: ep.value for ep in registered} == {"serve": "server.cli:serve"}
    listed = _dask_compute("--help")
    assert listed.returncode == 0, listed.stderr
    assert {"serve", "run", "info", "watch"} <= set(_commands(listed.stdout))
    serve_help = _dask_compute("serve", "--help")
    assert serve_help.returncode == 0, serve_help.stderr
    assert serve_help.stdout.startswith("Usage: dask-compute serve [OPTIONS]")
    assert "Start the gRPC service" in serve_help.stdout and "--n-workers" in serve_help.stdout


def test_a_client_only_install_has_no_serve_and_still_works(server) -> None:
    listed = _dask_compute("--help", client_only=True)
    assert listed.returncode == 0, listed.stderr
    commands = _commands(listed.stdout)
    assert "serve" not in commands and {"run", "info", "watch", "health"} <= set(commands)
    refused = _dask_compute("serve", "--port", "0", client_only=True)
    assert refused.returncode == 2, refused.stderr
    assert "No such command 'serve': an installed package registers it" in refused.stderr
    assert "server.cli:serve cannot be imported" in refused.stderr
    assert "Traceback" not in refused.stderr
    ran = _dask_compute("run", "add", "2", "3", "--target", server.target, client_only=True)
    assert (ran.returncode, ran.stdout.strip()) == (0, "5"), ran.stderr
