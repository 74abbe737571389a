"""Dask's side of the SDK: what ``dask.compute`` hands a scheduler, and the default scheduler.

Dask is imported only when a collection or graph is actually used, so that
calling named functions never pays for it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping
from typing import Any

logger = logging.getLogger(__name__)


def unpack(args: tuple[Any, ...], traverse: bool) -> tuple[tuple[Any, ...], Callable[[Any], Any]]:
    """The Dask collections in ``args`` and how to put their results back in place.

    As ``dask.compute`` does: ``args`` may hold collections, plain values, and
    (with ``traverse``) lists, tuples, sets and dicts of them.

    Returns:
        The collections, and a function that takes their computed values (in
        the same order) and returns ``args`` with each collection replaced.
    """
    from dask.base import unpack_collections

    collections, repack = unpack_collections(*args, traverse=traverse)
    return tuple(collections), repack


def graph(dsk: Any) -> Mapping[Any, Any]:
    """A task graph mapping from what Dask passes a scheduler function.

    Modern Dask passes an expression (which materializes its graph with
    ``__dask_graph__``); older code passes a dict or a ``HighLevelGraph``.
    Both Dask's local schedulers and ``distributed.Client.get`` take a dict or
    a ``HighLevelGraph``, so those are sent as they are.
    """
    if isinstance(dsk, Mapping):
        return dsk if isinstance(dsk, dict) or _is_high_level_graph(dsk) else dict(dsk)
    materialize = getattr(dsk, "__dask_graph__", None)
    if materialize is None:
        raise TypeError(f"expected a Dask graph or expression, got {type(dsk).__name__}")
    return graph(materialize())


def _is_high_level_graph(obj: Any) -> bool:
    from dask.highlevelgraph import HighLevelGraph

    return isinstance(obj, HighLevelGraph)


class RemoteScheduler:
    """A Dask scheduler function that runs graphs on the service.

    ``dask.compute`` calls it with a graph and the keys to compute, as it
    calls ``dask.threaded.get``.

    Args:
        client: The :class:`client_sdk.ComputeClient` to run on.
        scheduler: The service's scheduler to use; ``None`` is its default.
    """

    def __init__(self, client: Any, scheduler: str | None = None) -> None:
        self.client = client
        self.scheduler = scheduler

    def __call__(self, dsk: Any, keys: Any, **kwargs: Any) -> Any:
        """Compute ``keys`` of ``dsk`` on the service; results are shaped like ``keys``."""
        return self.client.get(dsk, keys, scheduler=self.scheduler, **kwargs)

    def __repr__(self) -> str:
        where = self.scheduler or "default"
        return f"<RemoteScheduler {self.client.target} scheduler={where}>"


class DefaultScheduler:
    """Makes a client Dask's default scheduler; undone by ``with`` or :meth:`restore`.

    Returned by :meth:`client_sdk.ComputeClient.as_default`. Creating it sets
    Dask's ``scheduler`` config to a :class:`RemoteScheduler`, so it works as a
    plain call (like creating a ``distributed.Client``) and as a context
    manager (which restores the previous scheduler on exit).
    """

    def __init__(self, client: Any, scheduler: str | None = None) -> None:
        import dask

        self.client = client
        self.scheduler_function = RemoteScheduler(client, scheduler)
        self._config = dask.config.set(scheduler=self.scheduler_function)
        self._restored = False

    def __enter__(self) -> Any:
        return self.client

    def __exit__(self, *exc_info: object) -> None:
        self.restore()

    @property
    def active(self) -> bool:
        """Whether Dask's default scheduler is still this client's."""
        if "dask" not in sys.modules:
            return False
        import dask

        return dask.config.get("scheduler", None) is self.scheduler_function

    def restore(self) -> None:
        """Put back the scheduler that was the default before (once)."""
        if not self._restored:
            self._restored = True
            self._config.__exit__(None, None, None)
