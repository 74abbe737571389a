"""The test suite's own layout: test modules share code through tests/helpers.py or
fixtures in tests/conftest.py, never by importing each other.

Imports are read from each module's syntax tree, so one inside a function counts,
and so do relative ones.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

from tests.helpers import ROOT

#: Packages of test modules: nothing in tests/ may import a module of theirs.
TEST_PACKAGES = ("tests.unit", "tests.integration")


def _module_name(path: pathlib.Path, root: pathlib.Path = ROOT) -> str:
    return ".".join(path.relative_to(root).with_suffix("").parts)


def _modules_to_check() -> list[pathlib.Path]:
    """Every test module, and the shared modules (helpers, conftest) beside them."""
    tests = ROOT / "tests"
    return sorted([*tests.glob("*.py"), *tests.glob("unit/*.py"), *tests.glob("integration/*.py")])


def imported_modules(path: pathlib.Path, root: pathlib.Path = ROOT) -> set[str]:
    """Every module ``path`` imports, relative imports resolved; ``from X import a``
    gives ``X`` and ``X.a`` (``a`` may be a module)."""
    package = _module_name(path, root).rsplit(".", 1)[0].split(".")
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join([*base, *([module] if module else [])])
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _of_test_packages(name: str) -> bool:
    return any(name == p or name.startswith(f"{p}.") for p in TEST_PACKAGES)


def test_the_check_sees_every_kind_of_import(tmp_path) -> None:
    # The check itself, on a module written now where a test module would be.
    fake = tmp_path / "tests" / "integration" / "test_fake.py"
    fake.parent.mkdir(parents=True)
    fake.write_text(
        "import tests.unit.test_core\n"
        "from tests.integration.test_cli import cli\n"
        "from . import test_replicas\n"
        "from .test_rpcs import named\n"
        "from ..unit import test_jobs\n"
        "from tests.helpers import inc\n"
        "from tests import helpers\n"
        "def later():\n"
        "    from tests.integration import test_security\n"
    )
    found = {name for name in imported_modules(fake, tmp_path) if _of_test_packages(name)}
    assert found == {
        "tests.unit.test_core",
        "tests.integration.test_cli",
        "tests.integration.test_cli.cli",
        "tests.integration",
        "tests.integration.test_replicas",
        "tests.integration.test_rpcs",
        "tests.integration.test_rpcs.named",
        "tests.unit",
        "tests.unit.test_jobs",
        "tests.integration.test_security",
    }


@pytest.mark.parametrize("path", _modules_to_check(), ids=_module_name)
def test_no_module_of_the_tests_imports_a_test_module(path: pathlib.Path) -> None:
    wrong = sorted(name for name in imported_modules(path) if _of_test_packages(name))
    assert not wrong, (
        f"{_module_name(path)} imports {wrong}: share through tests/helpers.py or a fixture "
        "in tests/conftest.py"
    )
