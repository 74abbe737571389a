"""The job store's reader threads: where every call that waits on the database runs.

Owns a small pool of threads of the store's own, so that a read (or a
write the caller waits for) never runs on the caller's event loop and never
takes a thread of the caller's job pools.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Reads that may wait on the database at once (each holds one connection).
READ_THREADS = 4


class Reader:
    """Runs blocking calls in the store's threads, for coroutines to await.

    Args:
        threads: How many calls may run at once.
    """

    def __init__(self, threads: int = READ_THREADS) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(
            threads, thread_name_prefix="dask-compute-store-read"
        )

    async def run(self, call: Callable[..., T], *args: Any) -> T:
        """``call(*args)`` in one of the store's threads; its result, once it returns.

        A caller cancelled while ``call`` runs stops waiting; ``call`` itself
        runs to its end (one that has not started yet is dropped).
        """
        return await asyncio.wrap_future(self._pool.submit(call, *args))

    def close(self) -> None:
        """Stop taking calls; the threads end once idle (without waiting for them)."""
        self._pool.shutdown(wait=False)
