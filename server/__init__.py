"""The Dask Compute Service server: a gRPC front-end to a long-lived Dask cluster.

Start it with ``dask-compute serve`` or ``python -m server``. Operators expose
their own functions with :func:`server.registry.function`.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dask-compute-service")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["__version__", "versions"]


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
