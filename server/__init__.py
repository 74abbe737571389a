"""The Dask Compute Service server: a gRPC front-end to a long-lived Dask cluster.

Start it with ``dask-compute serve`` or ``python -m server``. Operators expose
their own functions with :func:`server.registry.function`.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dask-compute-service")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
