"""The checked-in stubs are exactly what protos/gen_stubs.py generates today."""

import filecmp
import importlib.util
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_stubs_match_the_proto(tmp_path):
    out = tmp_path / "_proto"
    subprocess.run(
        [sys.executable, str(ROOT / "protos" / "gen_stubs.py"), "--out", str(out)],
        check=True,
        capture_output=True,
    )
    checked_in = ROOT / "client_sdk" / "_proto"
    generated = sorted(p.relative_to(out) for p in out.rglob("*.py*"))
    existing = sorted(p.relative_to(checked_in) for p in checked_in.rglob("*.py*"))
    assert generated == existing, "run `make protos`: the set of stub files differs"
    drifted = [str(p) for p in generated if not filecmp.cmp(out / p, checked_in / p, shallow=False)]
    assert not drifted, f"run `make protos`: these stubs drifted from the .proto: {drifted}"


def test_stubs_import_from_the_package():
    spec = importlib.util.find_spec("client_sdk._proto.compute.v1.compute_pb2_grpc")
    assert spec is not None
    from client_sdk._proto.compute.v1 import compute_pb2

    assert compute_pb2.DESCRIPTOR.package == "compute.v1"
    assert "ComputeService" in compute_pb2.DESCRIPTOR.services_by_name
