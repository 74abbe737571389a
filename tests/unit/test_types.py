"""Types: ``mypy`` passes on the targets pyproject.toml names (strict on the SDK,
default checks plus unannotated bodies on the server).

mypy is the real tool (in the test extra, with the gRPC and protobuf stubs);
its cache is .mypy_cache (gitignored), so a warm run takes about a second and a
cold one (CI's) about a minute. A second test shows that it fails on a type
error and that the SDK's section is strict, so that a clean run means something.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
MYPY = pathlib.Path(sys.executable).parent / "mypy"


def _mypy(*args: str, cwd: pathlib.Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([str(MYPY), *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_mypy_passes_on_the_configured_targets():
    proc = _mypy()  # files, flags and cache from pyproject.toml's [tool.mypy]
    assert proc.returncode == 0, f"mypy:\n{proc.stdout}{proc.stderr}"


def test_mypy_fails_on_a_type_error_under_the_projects_configuration(tmp_path):
    """A module of a ``client_sdk`` package with one wrong return type and one
    unannotated function, checked with pyproject's configuration: mypy fails
    and names both (the second only the SDK's strict section reports)."""
    sdk = tmp_path / "client_sdk"
    sdk.mkdir()
    (sdk / "__init__.py").write_text("")
    (sdk / "_broken.py").write_text(
        "def count() -> int:\n    return 'three'\n\n\ndef untyped(x):\n    return x\n"
    )
    proc = _mypy(
        "--config-file",
        str(ROOT / "pyproject.toml"),
        "--cache-dir",
        str(tmp_path / "cache"),
        "client_sdk",
        cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "_broken.py:2: error: Incompatible return value type" in proc.stdout, proc.stdout
    assert "_broken.py:5: error: Function is missing a type annotation" in proc.stdout, proc.stdout


def test_users_type_checkers_see_what_the_clients_methods_take_and_return(tmp_path):
    """The SDK is typed for its users (py.typed): a caller's mypy sees each
    client method's own parameters and value, not the operation's generator."""
    user = tmp_path / "user_code.py"
    user.write_text(
        "from client_sdk import AsyncComputeClient, ComputeClient\n"
        "\n"
        "\n"
        "async def use(client: ComputeClient, aclient: AsyncComputeClient) -> None:\n"
        "    reveal_type(client.info())\n"
        "    reveal_type(client.cancel('job-id', 'why'))\n"
        "    reveal_type(client.list_jobs(limit=3))\n"
        "    reveal_type(await aclient.info())\n"
        "    client.run('add', 2, 3, scheduler=1)\n"
    )
    proc = _mypy(str(user))  # from the root: this tree's client_sdk, its configuration
    out = proc.stdout
    assert 'user_code.py:5: note: Revealed type is "client_sdk.types.ClusterInfo"' in out, out
    assert 'user_code.py:6: note: Revealed type is "bool"' in out, out
    assert (
        "user_code.py:7: note: Revealed type is" in out
        and "Iterator[client_sdk.types.JobInfo]" in out
    ), out
    assert 'user_code.py:8: note: Revealed type is "client_sdk.types.ClusterInfo"' in out, out
    assert 'user_code.py:9: error: Argument "scheduler" has incompatible type "int"' in out, out
