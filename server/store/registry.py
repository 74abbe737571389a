"""The replica registry: what replicas sharing one job store know of each other.

Owns each replica's lease (renewed regularly; a replica whose lease ran out
is gone, and its unfinished jobs are adopted by exactly one other; leases are
written and judged by the database's clock, so that a replica whose own clock
is off neither judges others dead nor is judged dead wrongly), who holds
which job (a replica whose jobs were adopted learns it here), leaving
cleanly, and the shared record of when each uploaded object was last used
through any replica, stamped and judged by the database's clock too (so
that the replica whose janitor takes an unused object is the only one to
free it, and no replica's clock makes one expire early or late). Only a shared store (PostgreSQL) has one:
a store of one server's own has nobody to share with.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from server.jobs import JobRecord, JobState
from server.store import queries
from server.store.reader import Reader
from server.store.schema import (
    RECORD_SELECT,
    UNFINISHED,
    jobs_table,
    object_uses_table,
    replicas_table,
    to_record,
)
from server.store.writer import Rank, Write, Writer

logger = logging.getLogger(__name__)


class ReplicaRegistry:
    """The replicas sharing a job store, as this one (``instance_id``) takes part.

    Its coroutines wait on the database in the store's reader threads; the
    other methods only queue a write.

    Args:
        engine: The shared store's engine.
        instance_id: This replica, as recorded with the jobs it accepts.
        writer: The store's writer (object uses go with its next batch).
        reader: The store's reader threads.
    """

    def __init__(self, engine: sa.Engine, instance_id: str, writer: Writer, reader: Reader):
        self.engine = engine
        self.instance_id = instance_id
        self._writer = writer
        self._reader = reader

    async def adopt_orphans(self, lease: float, now: float | None = None) -> list[JobRecord]:
        """Renew this replica's lease, and take over the jobs of replicas whose lease ran out.

        Every replica sharing the store calls it regularly (more often than
        ``lease`` seconds). A replica unseen for ``lease`` seconds is gone
        (killed, its node lost): its unfinished jobs become this replica's,
        each taken by exactly one replica however many look at once, and its
        entry is removed. Jobs of a replica that never said it was alive (an
        older version) count once they are ``lease`` seconds old.

        Args:
            lease: Seconds a replica stays alive without renewing.
            now: The time (seconds since the epoch) to renew at and judge by;
                ``None`` (what replicas use): the database's clock, one for
                every replica, whatever each one's own clock says.

        Returns:
            The records taken over, oldest first, for the caller to re-run or fail.
        """
        return await self._reader.run(self._adopt_orphans, lease, now)

    def _adopt_orphans(self, lease: float, at: float | None) -> list[JobRecord]:
        me = self.instance_id
        # The database's time (fixed for the transaction), unless told one.
        now: Any = sa.literal(at) if at is not None else _database_now()
        with self.engine.begin() as conn:
            renewed = conn.execute(
                replicas_table.update()
                .where(replicas_table.c.instance_id == me)
                .values(last_seen=now)
            ).rowcount
            if not renewed:
                conn.execute(replicas_table.insert().values(instance_id=me, last_seen=now))
            gone = list(
                conn.execute(
                    sa.select(replicas_table.c.instance_id).where(
                        replicas_table.c.last_seen < now - lease
                    )
                ).scalars()
            )
            alive = sa.select(replicas_table.c.instance_id).where(
                replicas_table.c.last_seen >= now - lease
            )
            orphaned = sa.and_(
                jobs_table.c.state.in_(UNFINISHED),
                jobs_table.c.instance_id != me,
                sa.or_(
                    jobs_table.c.instance_id.in_(gone),
                    sa.and_(
                        jobs_table.c.instance_id.not_in(alive),
                        jobs_table.c.submit_time < now - lease,
                    ),
                ),
            )
            # The update says which rows it changed: a job another replica
            # took meanwhile no longer matches, so none is taken twice.
            taken = list(
                conn.execute(
                    jobs_table.update()
                    .where(orphaned)
                    .values(instance_id=me)
                    .returning(jobs_table.c.job_id)
                ).scalars()
            )
            if gone:
                conn.execute(replicas_table.delete().where(replicas_table.c.instance_id.in_(gone)))
            if not taken:
                return []
            rows = conn.execute(
                sa.select(*RECORD_SELECT)
                .where(jobs_table.c.job_id.in_(taken))
                .order_by(jobs_table.c.seq)
            )
            return [to_record(row) for row in rows]

    async def holders_of(self, job_ids: Iterable[str]) -> dict[str, tuple[JobState, str]]:
        """The stored state of those of ``job_ids`` that are stored, and the
        instance that holds each (another one's: it adopted the job)."""
        ids = list(job_ids)
        if not ids:
            return {}
        return await self._reader.run(self._holders_of, ids)

    def _holders_of(self, job_ids: list[str]) -> dict[str, tuple[JobState, str]]:
        with self.engine.connect() as conn:
            return queries.holders_of(conn, job_ids)

    async def leave(self) -> None:
        """Say this replica is gone (a clean shutdown), so nobody waits out its lease."""
        await self._reader.run(self._leave)

    def _leave(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                replicas_table.delete().where(replicas_table.c.instance_id == self.instance_id)
            )

    def use_objects(
        self, keys: Iterable[tuple[str, str]], ago: float = 0.0, now: float | None = None
    ) -> None:
        """Record that the objects ``keys`` (owner, object id) were used ``ago`` seconds ago.

        Stamped with the database's clock when the write is committed (with
        the writer's next transaction; never blocks), as leases are: a
        replica whose own clock is off makes no object look used earlier or
        later than it was. A later use already recorded (by another replica)
        is kept.

        Args:
            keys: The objects used.
            ago: Seconds before now (the database's) to stamp the use with.
            now: The time (seconds since the epoch) to stamp instead of the
                database's clock (``None``, what replicas use).
        """
        rows = [{"u_owner": o, "u_object_id": i} for o, i in keys]
        if not rows:
            return
        stamp = (sa.literal(now) if now is not None else _database_now()) - ago
        statement = _upsert(self.engine.dialect.name, stamp)
        self._writer.put(Write(lambda conn: conn.execute(statement, rows), rank=Rank.EXTRAS))

    def forget_object(self, owner: str, object_id: str) -> None:
        """Drop the record of a deleted object's uses (with the next transaction; never blocks)."""
        statement = object_uses_table.delete().where(
            object_uses_table.c.owner == owner, object_uses_table.c.object_id == object_id
        )
        self._writer.put(Write(lambda conn: conn.execute(statement), rank=Rank.EXTRAS))

    async def take_unused_objects(
        self, ttl: float, now: float | None = None
    ) -> list[tuple[str, str]]:
        """Remove and return the objects unused (through any replica) for ``ttl`` seconds.

        Judged by the database's clock (or ``now``, seconds since the epoch),
        never this replica's. Each is returned to exactly one caller, however
        many ask at once; uses queued here count.
        """
        return await self._reader.run(self._take_unused_objects, ttl, now)

    def _take_unused_objects(self, ttl: float, at: float | None) -> list[tuple[str, str]]:
        self._writer.flush()  # uses queued here count
        now: Any = sa.literal(at) if at is not None else _database_now()
        with self.engine.begin() as conn:
            rows = conn.execute(
                object_uses_table.delete()
                .where(object_uses_table.c.last_used < now - ttl)
                .returning(object_uses_table.c.owner, object_uses_table.c.object_id)
            )
            return [(row.owner, row.object_id) for row in rows]


def _database_now() -> Any:
    """The database's clock in seconds since the epoch, as an SQL expression.

    ``now()`` is the start of the transaction: one time for every
    comparison in it.
    """
    return sa.cast(sa.func.extract("epoch", sa.func.now()), sa.Float)


def _upsert(dialect: str, stamp: Any) -> Any:
    """An INSERT of object uses at ``stamp`` (an SQL expression) that keeps the
    later use of one already recorded."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        # Each dialect's insert() has its own type; both take the same on_conflict_do_update.
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    statement = insert(object_uses_table).values(
        owner=sa.bindparam("u_owner"), object_id=sa.bindparam("u_object_id"), last_used=stamp
    )
    return statement.on_conflict_do_update(
        index_elements=[object_uses_table.c.owner, object_uses_table.c.object_id],
        set_={"last_used": statement.excluded.last_used},
        where=object_uses_table.c.last_used < statement.excluded.last_used,
    )
