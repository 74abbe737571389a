"""What each install brings (pyproject.toml) and what the Makefile installs for each command.

The plain dependencies are the SDK's; the server's are the ``[server]`` extra, which
``server.SERVER_REQUIREMENTS`` checks for at import. A fresh venv with the plain
install is tested in tests/integration/test_client_only_install.py.
"""

from __future__ import annotations

import pathlib
import re
import subprocess

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import server
from tests.helpers import ROOT

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _names(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in requirements}


def _extra(name: str) -> list[Requirement]:
    return [Requirement(r) for r in PROJECT["optional-dependencies"][name]]


def test_the_plain_install_has_none_of_the_servers_dependencies() -> None:
    plain = _names(PROJECT["dependencies"])
    assert {"grpcio", "protobuf", "dask", "cloudpickle", "click"} <= plain
    for dist in (*server.SERVER_REQUIREMENTS.values(), "psycopg"):
        assert canonicalize_name(dist) not in plain, dist
    dask = next(Requirement(r) for r in PROJECT["dependencies"] if r.startswith("dask"))
    assert "dataframe" not in dask.extras  # pandas and pyarrow are the server's


def test_the_server_checks_for_what_its_extra_brings() -> None:
    brought = {canonicalize_name(r.name) for r in _extra("server")}
    # dask[dataframe] brings pandas and pyarrow, which the server imports itself.
    dask = next(r for r in _extra("server") if r.name == "dask")
    assert "dataframe" in dask.extras
    brought |= {"pandas", "pyarrow"}
    checked = {canonicalize_name(d) for d in server.SERVER_REQUIREMENTS.values()}
    assert checked == brought - {"dask"}


def test_the_test_extra_includes_the_server_and_postgres() -> None:
    (itself,) = [r for r in _extra("test") if r.name == PROJECT["name"]]
    assert itself.extras == {"server", "postgres"}
    assert _names(PROJECT["optional-dependencies"]["postgres"]) == {"psycopg"}


def test_the_license_is_an_spdx_expression_and_py_typed_is_package_data() -> None:
    assert PROJECT["license"] == "BSD-3-Clause"
    assert all((ROOT / f).is_file() for f in PROJECT["license-files"])
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "py.typed" in tool["package-data"]["client_sdk"]
    assert (ROOT / "client_sdk" / "py.typed").is_file()


def _make_dry_run(target: str, venv: pathlib.Path) -> list[str]:
    result = subprocess.run(
        ["make", "-n", target, f"VENV={venv}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.splitlines()


def _installs(lines: list[str]) -> list[str]:
    return [m.group(1) for line in lines if (m := re.search(r"pip install -e '(\S+)'", line))]


def test_make_serve_installs_the_server_and_make_test_the_test_tools(tmp_path) -> None:
    venv = tmp_path / "venv"
    assert _installs(_make_dry_run("serve", venv)) == [".[server]"]
    assert _installs(_make_dry_run("test", venv)) == [".[test]"]
    # Each stamp stands for its own set: one made by `make serve` leaves `make test` to install.
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").touch()
    (venv / ".installed-server-stamp").touch()
    assert _installs(_make_dry_run("serve", venv)) == []
    assert _installs(_make_dry_run("test", venv)) == [".[test]"]
    (venv / ".installed-test-stamp").touch()
    assert _installs(_make_dry_run("test", venv)) == []
