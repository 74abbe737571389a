"""Results of finished jobs that stay on the cluster, and moving them here.

A :class:`ClusterResult` holds the Dask futures of a job that ran on the
cluster (``distributed``): its result stays in the workers' memory until it
is fetched, streamed from the worker that holds it, or released (by
dropping the object). :func:`fetch_many` and :func:`nbytes_many` serve many
such results with one question to the scheduler.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from server import results, worker_stream

logger = logging.getLogger(__name__)

#: Seconds a direct gather of large results may take before the scheduler's way is tried.
DIRECT_GATHER_TIMEOUT = 120.0


def flatten(obj: Any) -> list[Any]:
    """The leaves of ``obj``, nested in lists and tuples (a job's futures)."""
    if isinstance(obj, (list, tuple)):
        return [leaf for item in obj for leaf in flatten(item)]
    return [obj]


_SCALAR_TYPES = (int, float, bool, complex, type(None))


class ClusterResult:
    """A finished job's result that stays on the cluster: the futures held for it.

    Dropping this object releases the result on the cluster.

    Args:
        futures: The job's futures, nested in lists and tuples.
        shape: How :meth:`shape` returns their values ("single", "tuple" or "plain").
        direct: Fetch the values from the workers themselves rather than
            through the scheduler (see :class:`Executors`).
    """

    def __init__(self, futures: Any, shape: str, direct: bool = False) -> None:
        self._futures = futures
        self._shape = shape
        self.direct = direct

    def published(self) -> dict[str, Any]:
        """What :meth:`from_published` rebuilds it from (a Dask dataset of its futures)."""
        return {"futures": self._futures, "shape": self._shape}

    @classmethod
    def from_published(cls, data: dict[str, Any], direct: bool = False) -> ClusterResult:
        """A result another replica published on the cluster, held here too."""
        return cls(data["futures"], data["shape"], direct)

    @property
    def keys(self) -> list:
        """The keys of the result's futures."""
        return [f.key for f in flatten(self._futures)]

    async def nbytes(self) -> int:
        """The result's size as the scheduler estimates it (Dask's ``sizeof``).

        Results whose type the client already knows to be a small scalar need
        no question to the scheduler.
        """
        futures = flatten(self._futures)
        if all(getattr(f, "type", None) in _SCALAR_TYPES for f in futures):
            return 0
        client = futures[0].client
        sizes = await client.nbytes(self.keys, summary=False)
        return sum(sizes.values())

    async def fetch(self, large: bool = False) -> Any:
        """Move the result here and return it, shaped as ``dask.compute`` would.

        ``large``: see :func:`fetch_many`.
        """
        return (await fetch_many([self], large))[0]

    @property
    def single_key(self) -> Any:
        """The key of the one future whose value is the result itself, or ``None``.

        ``None`` when the result gathers several futures (or wraps one in a tuple or list).
        """
        futures = self._futures
        if self._shape == "single" and isinstance(futures, (list, tuple)) and len(futures) == 1:
            futures = futures[0]
        elif self._shape != "plain":
            return None
        if isinstance(futures, (list, tuple)):
            return None
        return futures.key

    async def open_stream(self, fmt: str, is_function: bool) -> Any:
        """The result's pickle stream, read from the worker that holds it as it is sent.

        ``None`` when the result is not read that way: not fetched directly
        from the workers, not one future's value, not sent pickled
        (``fmt``, see :func:`server.results.is_pickle`), or no worker could
        encode it. The caller then fetches it with :meth:`fetch`. See
        :mod:`server.worker_stream`.
        """
        key = self.single_key
        if not self.direct or key is None or not results.is_pickle(fmt, is_function):
            return None
        client = flatten(self._futures)[0].client
        return await worker_stream.open_on_worker(client, key)

    def shape(self, value: Any) -> Any:
        """The futures' values, shaped as ``dask.compute`` would return them."""
        if self._shape == "single":
            return value[0]
        if self._shape == "tuple":
            return tuple(value)
        return value


async def nbytes_many(results: list[ClusterResult]) -> list[int]:
    """The sizes of many results held on the cluster, with one question to the scheduler."""
    sizes = [0] * len(results)
    asking = [
        (index, result)
        for index, result in enumerate(results)
        if not all(getattr(f, "type", None) in _SCALAR_TYPES for f in flatten(result._futures))
    ]
    if not asking:
        return sizes
    client = flatten(asking[0][1]._futures)[0].client
    known = await client.nbytes([key for _, r in asking for key in r.keys], summary=False)
    for index, result in asking:
        sizes[index] = sum(known.get(key, 0) for key in result.keys)
    return sizes


async def estimated_sizes(handles: list[ClusterResult], timeout: float) -> list[int]:
    """About how many bytes each result takes, with one question to the scheduler
    (0 for each when the scheduler does not answer within ``timeout``: encode them
    and see)."""
    try:
        return await asyncio.wait_for(nbytes_many(handles), timeout)
    except Exception:
        return [0] * len(handles)


async def fetch_many(results: list[ClusterResult], large: bool = False) -> list[Any]:
    """Move many results here with one ``gather`` (as Dask's client does for many futures).

    ``large`` results marked ``direct`` come straight from the workers that
    hold them: through the scheduler, the bytes cross one more connection, and
    a scheduler inside this process (a LocalCluster's) holds a second copy of
    them here while it passes them on (twice the memory, twice the time).
    Small results, the common case, go through the scheduler, as Dask's
    client sends them by default. A direct gather that makes no progress for
    :data:`DIRECT_GATHER_TIMEOUT` seconds is abandoned for the scheduler's way.
    """
    if not results:
        return []
    flat = [flatten(result._futures) for result in results]
    futures = [f for group in flat for f in group]
    client = futures[0].client
    values = None
    if large and all(result.direct for result in results):
        try:
            values = await asyncio.wait_for(
                client.gather(futures, direct=True), DIRECT_GATHER_TIMEOUT
            )
        except asyncio.TimeoutError:
            logger.warning(
                "fetching %d results straight from the workers took over %gs; "
                "fetching them through the scheduler",
                len(results),
                DIRECT_GATHER_TIMEOUT,
            )
    if values is None:
        values = await client.gather(futures)
    remaining = iter(values)
    return [result.shape(_refill(result._futures, remaining)) for result in results]


def _refill(template: Any, values: Any) -> Any:
    """``template``'s nesting of lists and tuples, its futures replaced from ``values``."""
    if isinstance(template, (list, tuple)):
        return type(template)([_refill(item, values) for item in template])
    return next(values)
