"""Named functions from the ``dask_compute.functions`` entry-point group and from --functions."""

from __future__ import annotations

import textwrap

import grpc
import pytest

from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk._proto.compute.v1 import compute_pb2_grpc as pb_grpc
from tests.helpers import ROOT, running_server

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
    args = ["--n-workers", "1", "--threads-per-worker", "1", "--dashboard-address", "", "--functions", "local_jobs"]
    with running_server(args, tmp_path / "server.log", env=env) as srv:
        with grpc.insecure_channel(srv.target) as channel:
            stub = pb_grpc.ComputeServiceStub(channel)
            names = {f.name for f in stub.ListFunctions(pb.ListFunctionsRequest(), timeout=30).functions}
            results = {}
            for name, arg in (("shout", "hi"), ("triple", 5), ("halve", 5)):
                spec = pb.JobSpec(call=pb.FunctionCall(function=name), scheduler=pb.SCHEDULER_DISTRIBUTED)
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
        start_server(["--functions", "no_such_module_xyz", "--dashboard-address", ""], tmp_path / "log", timeout=60)
    log = (tmp_path / "log").read_text()
    assert "Error: cannot load named functions: ModuleNotFoundError: No module named 'no_such_module_xyz'" in log
    assert "Traceback" not in log
