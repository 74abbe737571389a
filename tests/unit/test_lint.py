"""Lint and format: ``ruff check`` and ``ruff format --check`` pass on the whole tree.

ruff is the real tool (pinned in the test extra, with the rule set in
pyproject.toml); a second test shows it does fail on a lint error, so that a
clean run means something.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
RUFF = pathlib.Path(sys.executable).parent / "ruff"


def _ruff(*args: str, cwd: pathlib.Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([str(RUFF), *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_ruff_check_passes():
    proc = _ruff("check", "--no-cache", ".")
    assert proc.returncode == 0, f"ruff check:\n{proc.stdout}{proc.stderr}"


def test_ruff_format_check_passes():
    proc = _ruff("format", "--check", "--no-cache", ".")
    assert proc.returncode == 0, f"ruff format --check (run `ruff format .`):\n{proc.stdout}"


def test_ruff_fails_on_a_lint_error_under_the_projects_rules(tmp_path):
    """The same rules (pyproject's), on a file with an unused import and a bare
    except: ruff fails and names both."""
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n\ntry:\n    pass\nexcept:\n    pass\n")
    proc = _ruff("check", "--no-cache", "--config", str(ROOT / "pyproject.toml"), str(bad))
    assert proc.returncode == 1, proc.stdout
    assert "F401" in proc.stdout and "E722" in proc.stdout, proc.stdout
