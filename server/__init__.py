"""The Dask Compute Service server: a gRPC front-end to a long-lived Dask cluster.

Start it with ``dask-compute serve`` or ``python -m server``. Operators expose
their own functions with :func:`server.registry.function`.
"""

import importlib.util
from importlib.metadata import PackageNotFoundError, version

#: What the server imports beyond the SDK's dependencies, module -> the distribution
#: that brings it: the ``[server]`` extra (``pip install 'dask-compute-service[server]'``).
SERVER_REQUIREMENTS: dict[str, str] = {
    "distributed": "distributed",
    "sqlalchemy": "sqlalchemy",
    "prometheus_client": "prometheus-client",
    "grpc_reflection": "grpcio-reflection",
    "bokeh": "bokeh",
    "pandas": "pandas",
    "pyarrow": "pyarrow",
    "opentelemetry.trace": "opentelemetry-api",
    "opentelemetry.sdk": "opentelemetry-sdk",
    "opentelemetry.exporter.otlp.proto.grpc": "opentelemetry-exporter-otlp-proto-grpc",
    "opentelemetry.instrumentation.grpc": "opentelemetry-instrumentation-grpc",
}


def _found(module: str) -> bool:
    """Whether ``module`` can be imported (a submodule's parent may be missing too)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _check_requirements() -> None:
    """Refuse to import in a client-only install (the plain ``pip install dask-compute-service``).

    That install ships this package but not what it needs: the error says what to
    install, rather than which import broke first.
    """
    missing = sorted(dist for module, dist in SERVER_REQUIREMENTS.items() if not _found(module))
    if missing:
        raise ImportError(
            "the Dask Compute Service server needs packages this install lacks "
            f"({', '.join(missing)}); install them with: pip install 'dask-compute-service[server]'",
            name=__name__,
        )


_check_requirements()

try:
    __version__ = version("dask-compute-service")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["SERVER_REQUIREMENTS", "__version__", "versions"]


def versions() -> dict[str, str]:
    """Versions of the software this server runs (GetServerInfo reports them)."""
    import platform

    import cloudpickle
    import dask
    import distributed

    return {
        "python": platform.python_version(),
        "dask": dask.__version__,
        "distributed": distributed.__version__,
        "cloudpickle": cloudpickle.__version__,
        "service": __version__,
    }
