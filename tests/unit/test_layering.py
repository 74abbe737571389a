"""The core knows nothing of gRPC; the SDK knows nothing of the server."""

import subprocess
import sys


def _modules_after_import(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return set(out.stdout.split())


def test_core_does_not_import_grpc():
    loaded = _modules_after_import("server.core")
    assert "grpc" not in loaded
    assert not any(m.startswith("client_sdk") for m in loaded)


def test_sdk_does_not_import_the_server():
    loaded = _modules_after_import("client_sdk")
    assert not any(m == "server" or m.startswith("server.") for m in loaded)
