"""The janitor: what expires, expires.

Every round it drops uploaded objects unused for ``object_ttl`` (with
replicas, those unused through every replica), results older than
``result_ttl``, and records older than ``job_ttl`` or past ``max_jobs``,
with what each part holds for them; never the results (nor records) of jobs
that unfinished jobs use as inputs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from server.config import Settings
from server.held_results import HeldResults
from server.jobs import JobTable
from server.uploads import Uploads

logger = logging.getLogger(__name__)

#: How often expired results and records are dropped, in seconds.
JANITOR_INTERVAL = 30.0


class Janitor:
    """See the module docstring.

    Args:
        settings: The ttls and ``max_jobs``.
        store: The job records.
        uploads: The uploaded objects (:class:`server.uploads.Uploads`).
        held: The held results (:class:`server.held_results.HeldResults`).
        forget: Called with the ids of records dropped, for the parts that
            hold something for them.
        in_use: The jobs whose results unfinished jobs use (kept past the ttls,
            see :mod:`server.dependencies`).
    """

    def __init__(
        self,
        settings: Settings,
        store: JobTable,
        uploads: Uploads,
        held: HeldResults,
        forget: Callable[[set[str]], None],
        in_use: Callable[[], set[str]] = set,
    ) -> None:
        self.settings = settings
        self.store = store
        self.uploads = uploads
        self.held = held
        self.forget = forget
        self.in_use = in_use

    async def run(self) -> None:
        """Expire, round after round (often enough that an object outlives its
        last use by about its ttl)."""
        interval = min(JANITOR_INTERVAL, max(1.0, self.settings.object_ttl / 2))
        while True:
            await asyncio.sleep(interval)
            await self.expire(time.time())

    async def expire(self, now: float) -> None:
        """One round, as of ``now`` (seconds since the epoch)."""
        s = self.settings
        self.uploads.expire(now)
        self.held.background(self.uploads.sweep(now))
        in_use = self.in_use()
        await self.held.expire(now - s.result_ttl, in_use)
        old = set(await self.store.finished_before(now - s.job_ttl))
        excess = await self.store.count() - s.max_jobs
        if excess > 0:
            old.update(await self.store.oldest_finished(excess))
        old -= in_use
        if old:
            await self.store.delete(old)
            self.forget(old)
            logger.info("expired %d finished job records", len(old))
