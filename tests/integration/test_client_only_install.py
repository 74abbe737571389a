"""The plain install (``pip install dask-compute-service``, no extras) is a client only.

A fresh virtualenv, with no access to the test venv's packages, gets the project's
wheel, built from this checkout, and whatever its own dependencies pull from the
package index (pip's cache makes later runs quick). In it: the README's Python
example runs against a real server (the session's, from the test venv), the
``dask-compute`` client commands work, the server's dependencies are absent,
``import server`` and ``dask-compute serve`` say what to install, and the SDK's
``py.typed`` is there. The venv is built once per test session.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

from tests.helpers import ROOT, RunningServer

# The first test builds the venv: pip may download its dependencies (about 30 s from a cache).
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

#: What the wheel is built from: setuptools finds the server* and client_sdk* packages.
_SOURCES = ("pyproject.toml", "README.md", "LICENSE", "server", "client_sdk")

#: Distributions of the [server] extra that the plain install must not bring, by module.
_SERVER_ONLY = (
    "sqlalchemy",
    "bokeh",
    "prometheus_client",
    "distributed",
    "grpc_reflection",
    "opentelemetry",
)

_INSTALL_HINT = "pip install 'dask-compute-service[server]'"


@dataclasses.dataclass(frozen=True)
class ClientVenv:
    """A virtualenv holding the plain install, and how to run things in it."""

    root: pathlib.Path
    workdir: pathlib.Path

    def run(
        self, *args: str | os.PathLike[str], timeout: float = 180
    ) -> subprocess.CompletedProcess:
        """Run ``args`` (the first a program in the venv's bin/) away from the checkout."""
        program, *rest = args
        return subprocess.run(
            [str(self.root / "bin" / program), *map(str, rest)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=_clean_env(),
            cwd=self.workdir,  # not the checkout: '' on sys.path would find its server/
            check=False,
        )


def _clean_env() -> dict[str, str]:
    """This environment without what would let the venv see the checkout or the test venv."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV"}
    }
    env.pop("DASK_COMPUTE_TARGET", None)
    return {**env, "PYTHONNOUSERSITE": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def _checked(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, (
        f"{result.args} exited {result.returncode}:\n{result.stderr[-4000:]}"
    )
    return result


@pytest.fixture(scope="session")
def client_venv(tmp_path_factory: pytest.TempPathFactory) -> ClientVenv:
    """A fresh venv with the project's wheel installed without extras."""
    base = tmp_path_factory.mktemp("client-only")
    source = base / "src"
    source.mkdir()
    for name in _SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif path.exists():
            shutil.copy2(path, source / name)
    # Built in a copy, so the checkout gets no build/ (the build env comes from the index, as
    # any install from source gets it).
    wheels = base / "wheels"
    _checked(
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps",
             "--quiet", "-w", str(wheels), str(source)],
            capture_output=True, text=True, timeout=300, env=_clean_env(), cwd=base, check=False,
        )
    )  # fmt: skip
    (wheel,) = wheels.glob("dask_compute_service-*.whl")
    root = base / "venv"
    _checked(
        subprocess.run(
            [sys.executable, "-m", "venv", str(root)],
            capture_output=True, text=True, timeout=300, env=_clean_env(), cwd=base, check=False,
        )
    )  # fmt: skip
    venv = ClientVenv(root, base)
    _checked(venv.run("python", "-m", "pip", "install", "--quiet", wheel, timeout=600))
    return venv


def _readme_python_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Python\n", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


class _PrintExpressions(ast.NodeTransformer):
    """Turn each bare expression ``x`` (one a REPL would echo) into ``print(repr(x))``."""

    def visit_Expr(self, node: ast.Expr) -> ast.stmt:
        value = node.value
        if isinstance(value, ast.Call) and getattr(value.func, "id", None) == "print":
            return node
        call = ast.Call(
            ast.Name("print", ast.Load()),
            [ast.Call(ast.Name("repr", ast.Load()), [value], [])],
            [],
        )
        return ast.copy_location(ast.Expr(call), node)


def test_the_plain_install_runs_the_readme_example(
    client_venv: ClientVenv, server: RunningServer
) -> None:
    example = _readme_python_example()
    assert '"127.0.0.1:50051"' in example, example
    tree = _PrintExpressions().visit(ast.parse(example.replace("127.0.0.1:50051", server.target)))
    script = client_venv.workdir / "readme_example.py"
    script.write_text(ast.unparse(ast.fix_missing_locations(tree)))
    printed = _checked(client_venv.run("python", script)).stdout.splitlines()
    assert len(printed) == 4, printed
    assert printed[0].startswith(f"<ComputeClient: 'grpc://{server.target}' workers="), printed
    assert printed[1:3] == ["5", "6"], printed
    # compute(x.mean()) returns a 1-tuple, as dask.compute does: the mean of uniform numbers.
    mean = re.fullmatch(r"\((?:np\.float64\()?([0-9.]+)\)?,\)", printed[3])
    assert mean is not None and abs(float(mean.group(1)) - 0.5) < 0.01, printed


def test_the_plain_install_has_no_server(client_venv: ClientVenv) -> None:
    probe = (
        "import importlib.util, sys\n"
        f"absent = {list(_SERVER_ONLY)!r}\n"
        "print(*[m for m in absent if importlib.util.find_spec(m) is not None])\n"
        "import client_sdk, client_sdk.cli\n"
        "assert 'server' not in sys.modules\n"
        "try:\n"
        "    import server\n"
        "except ImportError as exc:\n"
        "    print(f'{type(exc).__name__}: {exc}')\n"
        "else:\n"
        "    print('imported', server.__file__)\n"
    )
    found, refused = _checked(client_venv.run("python", "-c", probe)).stdout.splitlines()
    assert found == "", f"the plain install brings server dependencies: {found}"
    assert refused.startswith("ImportError: the Dask Compute Service server needs packages"), (
        refused
    )
    assert refused.endswith(_INSTALL_HINT), refused
    for dist in ("sqlalchemy", "bokeh", "prometheus-client", "distributed"):
        assert dist in refused, refused


def test_the_plain_install_cli_is_a_client_and_serve_says_what_to_install(
    client_venv: ClientVenv, server: RunningServer
) -> None:
    listed = _checked(client_venv.run("dask-compute", "--help")).stdout
    commands = [
        line.split()[0]
        for line in listed.split("\nCommands:\n", 1)[1].splitlines()
        if line.startswith("  ")
    ]
    assert "serve" not in commands and {"run", "info", "health", "watch"} <= set(commands), listed
    ran = _checked(
        client_venv.run("dask-compute", "run", "add", "2", "3", "--target", server.target)
    )
    assert ran.stdout.strip() == "5"
    refused = client_venv.run("dask-compute", "serve", "--port", "0")
    assert refused.returncode == 2, refused.stderr
    assert "Traceback" not in refused.stderr, refused.stderr
    assert "No such command 'serve'" in refused.stderr, refused.stderr
    assert f"install them with: {_INSTALL_HINT}" in refused.stderr, refused.stderr


def test_the_plain_install_ships_the_sdk_typed(client_venv: ClientVenv) -> None:
    located = (
        "import importlib.metadata, pathlib, client_sdk\n"
        "print(pathlib.Path(client_sdk.__file__).parent)\n"
        "print(importlib.metadata.metadata('dask-compute-service')['License-Expression'])\n"
    )
    package, license_expression = _checked(
        client_venv.run("python", "-c", located)
    ).stdout.splitlines()
    assert pathlib.Path(package).is_relative_to(client_venv.root), package
    assert (pathlib.Path(package) / "py.typed").is_file()
    assert license_expression == "BSD-3-Clause"
