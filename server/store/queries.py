"""The job store's reads and bulk changes, as plain functions of a connection.

Owns the SQL of everything the reader threads run for the job table
(listing, who holds a job, idempotency keys, orphans, expiry, deletion);
each function runs in the caller's transaction and blocks, so only the
store's own threads call them. Long lists of ids go in chunks, well below
any database's limit.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Sequence
from typing import Any

import sqlalchemy as sa

from server.jobs import JobRecord, JobState
from server.store.schema import RECORD_SELECT, UNFINISHED, jobs_table, to_record

logger = logging.getLogger(__name__)

#: Ids per statement where one lists many.
CHUNK = 500


def _chunks(items: Sequence[str]) -> list[Sequence[str]]:
    return [items[start : start + CHUNK] for start in range(0, len(items), CHUNK)]


def max_seq(conn: sa.Connection) -> int:
    """The highest ``seq`` stored (0 when none is)."""
    return conn.execute(sa.select(sa.func.max(jobs_table.c.seq))).scalar() or 0


def seqs_of(conn: sa.Connection, job_ids: Sequence[str]) -> list[int]:
    """The ``seq`` of each of ``job_ids`` (all stored), in their order."""
    seqs: dict[str, int] = {}
    for chunk in _chunks(job_ids):
        query = sa.select(jobs_table.c.job_id, jobs_table.c.seq).where(
            jobs_table.c.job_id.in_(chunk)
        )
        seqs.update((row.job_id, row.seq) for row in conn.execute(query))
    return [seqs[job_id] for job_id in job_ids]


def page(
    conn: sa.Connection,
    states: Collection[JobState],
    limit: int,
    below: int | None,
    owner: str | None,
) -> list[Any]:
    """Up to ``limit`` rows, newest first, below ``seq`` ``below``, of those states and owner."""
    query = sa.select(*RECORD_SELECT).order_by(jobs_table.c.seq.desc()).limit(limit)
    if below is not None:
        query = query.where(jobs_table.c.seq < below)
    if states:
        query = query.where(jobs_table.c.state.in_([s.value for s in states]))
    if owner is not None:
        query = query.where(jobs_table.c.owner == owner)
    return list(conn.execute(query).all())


def states_of(conn: sa.Connection, job_ids: Sequence[str]) -> dict[str, JobState]:
    """The stored states of those of ``job_ids`` that are stored."""
    states: dict[str, JobState] = {}
    for chunk in _chunks(job_ids):
        query = sa.select(jobs_table.c.job_id, jobs_table.c.state).where(
            jobs_table.c.job_id.in_(chunk)
        )
        states.update((row.job_id, JobState(row.state)) for row in conn.execute(query))
    return states


def held_record(conn: sa.Connection, job_id: str) -> tuple[JobRecord, str] | None:
    """The stored record of ``job_id`` and the instance that holds it, if it is stored."""
    query = sa.select(*RECORD_SELECT, jobs_table.c.instance_id).where(jobs_table.c.job_id == job_id)
    row = conn.execute(query).first()
    return None if row is None else (to_record(row), row.instance_id)


def holders_of(conn: sa.Connection, job_ids: Sequence[str]) -> dict[str, tuple[JobState, str]]:
    """The stored state of those of ``job_ids`` that are stored, and who holds each."""
    found: dict[str, tuple[JobState, str]] = {}
    for chunk in _chunks(job_ids):
        query = sa.select(jobs_table.c.job_id, jobs_table.c.state, jobs_table.c.instance_id).where(
            jobs_table.c.job_id.in_(chunk)
        )
        found.update((r.job_id, (JobState(r.state), r.instance_id)) for r in conn.execute(query))
    return found


def request_keys(conn: sa.Connection) -> set[tuple[str, str]]:
    """Every stored idempotency key, with its owner."""
    query = sa.select(jobs_table.c.owner, jobs_table.c.request_id).where(
        jobs_table.c.request_id != ""
    )
    return {(row.owner, row.request_id) for row in conn.execute(query)}


def by_request(conn: sa.Connection, owner: str, request_ids: Sequence[str]) -> list[Any]:
    """The rows of ``owner``'s jobs with those idempotency keys, oldest first."""
    rows: list[Any] = []
    for chunk in _chunks(request_ids):
        query = (
            sa.select(*RECORD_SELECT)
            .where(jobs_table.c.owner == owner, jobs_table.c.request_id.in_(chunk))
            .order_by(jobs_table.c.seq)
        )
        rows.extend(conn.execute(query))
    return rows


def unfinished(conn: sa.Connection) -> list[JobRecord]:
    """Records still queued or running, oldest first."""
    query = (
        sa.select(*RECORD_SELECT)
        .where(jobs_table.c.state.in_(UNFINISHED))
        .order_by(jobs_table.c.seq)
    )
    return [to_record(row) for row in conn.execute(query)]


def request_of(conn: sa.Connection, job_id: str) -> dict[str, Any] | None:
    """The kept request of a job, if any."""
    query = sa.select(jobs_table.c.request).where(jobs_table.c.job_id == job_id)
    text = conn.execute(query).scalar()
    return json.loads(text) if text else None


def stored_result(conn: sa.Connection, job_id: str) -> bytes | None:
    """The result stored with a record, if any."""
    query = sa.select(jobs_table.c.result).where(jobs_table.c.job_id == job_id)
    return conn.execute(query).scalar()


def stored_result_sizes(conn: sa.Connection, job_ids: Sequence[str]) -> dict[str, int]:
    """The sizes in bytes of the results stored with those of ``job_ids`` that have one."""
    sizes: dict[str, int] = {}
    for chunk in _chunks(job_ids):
        length = sa.func.length(jobs_table.c.result)
        query = sa.select(jobs_table.c.job_id, length).where(
            jobs_table.c.job_id.in_(chunk), jobs_table.c.result.is_not(None)
        )
        sizes.update((job_id, size) for job_id, size in conn.execute(query))
    return sizes


def expire_results(
    conn: sa.Connection, before: float, keep: frozenset[str] = frozenset()
) -> list[str]:
    """Drop the results of jobs finished before ``before``, but ``keep``'s; their ids."""
    condition = sa.and_(jobs_table.c.result_available.is_(True), jobs_table.c.finish_time < before)
    found = conn.execute(sa.select(jobs_table.c.job_id).where(condition)).scalars()
    ids = [job_id for job_id in found if job_id not in keep]
    for chunk in _chunks(ids):
        conn.execute(
            jobs_table.update()
            .where(jobs_table.c.job_id.in_(chunk))
            .values(result_available=False, result=None)
        )
    return ids


def lose_results(conn: sa.Connection, why: str) -> list[str]:
    """Succeeded jobs whose record says their result is there, but none is stored
    with it: mark the result gone, saying ``why``; their ids.

    Only for a store of one server, after a restart: a result it did not store
    was held by its process (or its cluster client), which is gone.
    """
    condition = sa.and_(
        jobs_table.c.state == JobState.SUCCEEDED.value,
        jobs_table.c.result_available.is_(True),
        jobs_table.c.result.is_(None),
    )
    ids = list(conn.execute(sa.select(jobs_table.c.job_id).where(condition)).scalars())
    for chunk in _chunks(ids):
        conn.execute(
            jobs_table.update()
            .where(jobs_table.c.job_id.in_(chunk))
            .values(result_available=False, result_gone=why)
        )
    return ids


def result_gone(conn: sa.Connection, job_id: str) -> str | None:
    """Why a job's result is gone, if :func:`lose_results` marked it."""
    query = sa.select(jobs_table.c.result_gone).where(jobs_table.c.job_id == job_id)
    return conn.execute(query).scalar()


def finished_before(conn: sa.Connection, when: float) -> list[str]:
    """Ids of jobs whose finish time is before ``when``."""
    query = sa.select(jobs_table.c.job_id).where(jobs_table.c.finish_time < when)
    return list(conn.execute(query).scalars())


def oldest_finished(conn: sa.Connection, count: int) -> list[str]:
    """Ids of the ``count`` oldest finished jobs."""
    query = (
        sa.select(jobs_table.c.job_id)
        .where(jobs_table.c.finish_time.is_not(None))
        .order_by(jobs_table.c.seq)
        .limit(count)
    )
    return list(conn.execute(query).scalars())


def delete(conn: sa.Connection, job_ids: Sequence[str]) -> None:
    """Delete the records of ``job_ids``."""
    for chunk in _chunks(job_ids):
        conn.execute(jobs_table.delete().where(jobs_table.c.job_id.in_(chunk)))


def count(conn: sa.Connection) -> int:
    """How many records are stored."""
    return conn.execute(sa.select(sa.func.count()).select_from(jobs_table)).scalar_one()
