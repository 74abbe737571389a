"""The core knows nothing of gRPC; the SDK knows nothing of the server."""

import ast
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


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


def _server_names(tree: ast.AST) -> list[str]:
    """Imports of the server package, and strings naming one of its modules, in ``tree``."""
    found = []
    for node in ast.walk(tree):  # imports inside functions too
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if _is_server(alias.name)]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found += [node.module] if _is_server(node.module or "") else []
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            found += [node.value] if _SERVER_PATH.fullmatch(node.value) else []
    return found


_SERVER_PATH = re.compile(r"server(\.\w+)*(:\w+)?")


def _is_server(module: str) -> bool:
    return module == "server" or module.startswith("server.")


def test_the_sdk_never_names_the_server() -> None:
    # Not even lazily: `dask-compute serve` comes from the server's own entry point.
    named = {}
    for path in sorted((ROOT / "client_sdk").rglob("*.py")):
        if "_proto" not in path.parts:
            names = _server_names(ast.parse(path.read_text(), str(path)))
            if names:
                named[str(path.relative_to(ROOT))] = names
    assert named == {}
    planted = ast.parse("def f():\n    import server.app\n\nLAZY = {'serve': 'server.cli:serve'}\n")
    assert _server_names(planted) == ["server.app", "server.cli:serve"], (
        "the check itself finds them"
    )


def test_no_sdk_module_is_over_500_lines() -> None:
    # One concern per module (the generated stubs aside).
    sizes = {
        str(path.relative_to(ROOT)): len(path.read_text().splitlines())
        for path in (ROOT / "client_sdk").rglob("*.py")
        if "_proto" not in path.parts
    }
    assert len(sizes) > 20, "the walk found the SDK's modules"
    assert {path: n for path, n in sizes.items() if n > 500} == {}


#: The server's modules that speak gRPC (or translate protobuf); every other one is the core's.
GRPC_FACING = {"app", "servicer", "convert", "interceptors", "status", "tls", "cli", "__main__"}


def _imports(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):  # imports inside functions too
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_no_part_of_the_core_imports_grpc() -> None:
    # Not even lazily: the core is plain Python, the servicer translates.
    offenders = {}
    parts = [
        path
        for path in sorted((ROOT / "server").rglob("*.py"))
        if path.relative_to(ROOT / "server").with_suffix("").as_posix() not in GRPC_FACING
    ]
    assert {"admission.py", "runner.py", "replicas.py", "core.py"} <= {p.name for p in parts}
    for path in parts:
        imported = _imports(ast.parse(path.read_text(), str(path)))
        if imported & {"grpc", "grpc_status", "grpc_health", "grpc_reflection"}:
            offenders[str(path.relative_to(ROOT))] = sorted(imported)
    assert offenders == {}
    assert _imports(ast.parse("def f():\n    import grpc.aio\n")) == {"grpc"}, "the check finds it"


def test_no_server_module_is_over_500_lines() -> None:
    sizes = {
        str(path.relative_to(ROOT)): len(path.read_text().splitlines())
        for path in (ROOT / "server").rglob("*.py")
    }
    assert len(sizes) > 30, "the walk found the server's modules"
    assert {path: n for path, n in sizes.items() if n > 500} == {}
