"""A job's progress in Dask tasks, from Dask's own bookkeeping, never estimated.

On the local schedulers, the callbacks of ``dask.local.get_async`` count
finished tasks as the scheduler runs them. On the cluster, the scheduler's task states
are read: every task the job's result depends on, counted done once it is in
memory, erred, or already forgotten (consumed and released).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Hashable, Iterable
from typing import Any


class Progress:
    """Tasks done out of tasks in all, for one job."""

    def __init__(self) -> None:
        self.done = 0
        self.total = 0
        #: Keys of the job's results on the cluster (distributed jobs only).
        self.roots: list[Hashable] = []
        #: Every task key of the job, learned at the first look at the scheduler.
        self.known: list[Hashable] | None = None
        self._lock = threading.Lock()

    def callback(self) -> tuple:
        """Callbacks for one local-scheduler ``get``: count its tasks.

        The 5-tuple ``(start, start_state, pretask, posttask, finish)`` that
        ``dask.local.get_async`` documents for its ``callbacks`` argument.
        """

        def start_state(dsk: Any, state: Any) -> None:
            with self._lock:
                self.total += len(dsk)

        def posttask(key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
            with self._lock:
                self.done += 1

        return (None, start_state, None, posttask, None)

    def single_task(self, done: bool) -> None:
        """Counts for a job that is one call: 0/1, then 1/1."""
        self.total = 1
        self.done = 1 if done else 0

    async def first_look(self, client: Any, tries: int = 50) -> None:
        """Learn the job's tasks right after submission, while they all still exist.

        Finished tasks are forgotten once their dependents have them, so a
        first look after the job ran would see only its result.
        """
        for _ in range(tries):
            await self.refresh_from_scheduler(client)
            if self.known is not None:
                return
            await asyncio.sleep(0.01)

    async def refresh_from_scheduler(self, client: Any) -> None:
        """Read the scheduler's task states of the job's tasks."""
        if not self.roots:
            return

        # Defined here so cloudpickle sends it by value: an external scheduler
        # need not have this package installed.
        def count(dask_scheduler: Any, roots: list, known: list | None) -> tuple:
            tasks = dask_scheduler.tasks
            if known is None and not all(key in tasks for key in roots):
                return 0, 0, None  # the graph has not reached the scheduler yet
            if known is None:
                seen: set = set()
                stack = list(roots)
                while stack:
                    key = stack.pop()
                    if key in seen:
                        continue
                    seen.add(key)
                    ts = tasks.get(key)
                    if ts is not None:
                        stack.extend(dep.key for dep in ts.dependencies)
                known = list(seen)
                first = True
            else:
                first = False
            done = 0
            for key in known:
                ts = tasks.get(key)
                if ts is None or ts.state in ("memory", "erred", "forgotten"):
                    done += 1
            return len(known), done, (known if first else None)

        total, done, known = await client.run_on_scheduler(
            count, roots=self.roots, known=self.known
        )
        if known is not None:
            self.known = known
        self.total, self.done = total, max(self.done, done)


def flatten_keys(futures: Any) -> Iterable[Hashable]:
    """Keys of distributed futures nested in lists and tuples."""
    if isinstance(futures, (list, tuple)):
        for item in futures:
            yield from flatten_keys(item)
    else:
        yield futures.key
