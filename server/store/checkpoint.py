"""The SQLite store's checkpointer: copies the write-ahead log into the database file, off the commit path.

A SQLite file in WAL mode appends each commit to its log (``jobs.db-wal``);
a *checkpoint* copies the logged pages back into the file and syncs it to
disk. Left to SQLite, the commit that fills the log past 1,000 pages runs the
checkpoint itself, so every few hundred commits one waits for a sync: on the
group-commit writer, which every waiting caller waits on. Instead every
connection of the store turns automatic checkpoints off
(:func:`server.store.schema.make_engine`) and this thread checkpoints on a
connection of its own, a moment after commits (a ``PASSIVE`` checkpoint: it
never blocks the writer, nor readers), and once more, in full, at close.

Durability is unchanged: with ``synchronous=NORMAL`` a commit is in the log
when the writer reports it, and survives the server being killed; only a
power cut can lose the last commits, checkpointed or not.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import sqlalchemy as sa

logger = logging.getLogger(__name__)

#: How often, at most, the log is checkpointed while commits go on (seconds).
CHECKPOINT_INTERVAL = 0.25


class Checkpointer:
    """A thread that checkpoints a SQLite store's log after commits, and at close.

    Args:
        engine: The store's SQLite engine.
        commits: How many transactions the store's writer has committed so far
            (the thread checkpoints only when that has changed).
        interval: Seconds between checkpoints while commits go on.
    """

    def __init__(
        self, engine: sa.Engine, commits: Callable[[], int], interval: float = CHECKPOINT_INTERVAL
    ) -> None:
        self._engine = engine
        self._commits = commits
        self._interval = interval
        self._stop = threading.Event()
        #: Checkpoints run so far (for tests and diagnostics).
        self.checkpoints = 0
        self._thread = threading.Thread(
            target=self._run, name="dask-compute-store-checkpoint", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        seen = self._commits()
        while not self._stop.wait(self._interval):
            now = self._commits()
            if now == seen:
                continue
            seen = now
            try:
                self.checkpoint("PASSIVE")
            except sa.exc.SQLAlchemyError as exc:  # the next round tries again; commits go on
                logger.warning("job store: checkpoint of the write-ahead log failed: %s", exc)

    def checkpoint(self, mode: str = "PASSIVE") -> tuple[int, int, int]:
        """Run one checkpoint (blocks: runs in the caller's thread).

        Returns:
            SQLite's answer: (busy, pages in the log, pages checkpointed).
        """
        with self._engine.connect() as conn:
            row = conn.exec_driver_sql(f"PRAGMA wal_checkpoint({mode})").one()
        self.checkpoints += 1
        return int(row[0]), int(row[1]), int(row[2])

    def close(self) -> None:
        """Stop the thread, then checkpoint everything and empty the log (blocks)."""
        self._stop.set()
        self._thread.join(10)
        try:
            self.checkpoint("TRUNCATE")
        except sa.exc.SQLAlchemyError as exc:  # the log stays; SQLite replays it on the next open
            logger.warning("job store: final checkpoint failed: %s", exc)
