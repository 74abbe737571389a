"""The .proto passes buf lint (STANDARD + COMMENTS, from buf.yaml) and buf format."""

import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _buf() -> str:
    candidate = pathlib.Path(sys.executable).parent / "buf"
    found = str(candidate) if candidate.exists() else shutil.which("buf")
    assert found, "buf is not installed: pip install buf-bin (make test does)"
    return found


def test_buf_lint_passes():
    result = subprocess.run([_buf(), "lint"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_lint_checks_comments(tmp_path):
    """The COMMENTS rules are on: an uncommented field fails."""
    (tmp_path / "protos" / "x" / "v1").mkdir(parents=True)
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    (tmp_path / "protos" / "x" / "v1" / "x.proto").write_text(
        'syntax = "proto3";\npackage x.v1;\n// M.\nmessage M {\n  string undocumented = 1;\n}\n'
    )
    result = subprocess.run([_buf(), "lint"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode != 0 and "undocumented" in result.stdout


def test_buf_format_is_clean():
    result = subprocess.run(
        [_buf(), "format", "--diff", "--exit-code", "protos"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
