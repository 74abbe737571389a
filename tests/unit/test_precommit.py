""".pre-commit-config.yaml: the hooks are the test suite's own checks.

pre-commit is the real tool (in the test extra): it validates the file, and
runs its hooks on a small repository of its own, where they fail on a lint
error and on a type error as the suite does (same tools from the venv, same
pyproject.toml).
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIG = ROOT / ".pre-commit-config.yaml"
BIN = pathlib.Path(sys.executable).parent
PRE_COMMIT = BIN / "pre-commit"


def _hooks() -> dict[str, dict]:
    config = yaml.safe_load(CONFIG.read_text())
    return {hook["id"]: hook for repo in config["repos"] for hook in repo["hooks"]}


def test_the_config_is_valid_for_pre_commit():
    proc = subprocess.run(
        [str(PRE_COMMIT), "validate-config", str(CONFIG)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_hooks_are_ruff_check_ruff_format_and_mypy_from_the_venv():
    hooks = _hooks()
    assert set(hooks) == {"ruff-check", "ruff-format", "mypy"}
    assert hooks["ruff-check"]["entry"].split()[:2] == [".venv/bin/ruff", "check"]
    assert hooks["ruff-format"]["entry"].split()[:2] == [".venv/bin/ruff", "format"]
    # mypy takes its targets from pyproject.toml, as tests/unit/test_types.py runs it.
    assert hooks["mypy"]["entry"] == ".venv/bin/mypy"
    assert hooks["mypy"]["pass_filenames"] is False
    for hook in hooks.values():  # the project's tools, with the project's dependencies
        assert hook["language"] == "system", hook
        assert "--config" not in hook["entry"], hook


def _repository(tmp_path: pathlib.Path, files: dict[str, str]) -> pathlib.Path:
    """A git repository with this config, pyproject.toml, ``files`` staged, and
    .venv pointing at the venv running the tests."""
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(CONFIG, repo / CONFIG.name)
    shutil.copy(ROOT / "pyproject.toml", repo / "pyproject.toml")
    (repo / ".venv").symlink_to(BIN.parent, target_is_directory=True)
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["git", "add", CONFIG.name, "pyproject.toml", *files], cwd=repo, check=True)
    return repo


def _run_hooks(tmp_path: pathlib.Path, repo: pathlib.Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home")}
    env["MYPY_CACHE_DIR"] = str(tmp_path / "mypy-cache")
    return subprocess.run(
        [str(PRE_COMMIT), "run", "--all-files", "--color", "never"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_hooks_pass_on_clean_code(tmp_path):
    repo = _repository(
        tmp_path,
        {
            "client_sdk/__init__.py": "",
            "client_sdk/good.py": "def one() -> int:\n    return 1\n",
            "server/__init__.py": "",
        },
    )
    proc = _run_hooks(tmp_path, repo)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_hooks_fail_on_a_lint_error_and_on_a_type_error(tmp_path):
    """An unused import (ruff check), a badly formatted line (ruff format) and a
    wrong return type (mypy, strict on client_sdk): each hook fails and says why."""
    repo = _repository(
        tmp_path,
        {
            "client_sdk/__init__.py": "",
            "client_sdk/bad.py": "import os\n\n\ndef count() -> int:\n    return  'three'\n",
            "server/__init__.py": "",
        },
    )
    proc = _run_hooks(tmp_path, repo)
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert "F401" in out, out
    assert "1 file reformatted" in out, out
    assert "bad.py:5: error: Incompatible return value type" in out, out
    for name in ("ruff check", "ruff format", "mypy"):
        assert any(
            line.startswith(name) and line.endswith("Failed") for line in out.splitlines()
        ), (
            name,
            out,
        )
