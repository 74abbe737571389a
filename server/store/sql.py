"""SqlJobTable: the job table in a SQL database, SQLite by default, PostgreSQL for replicas.

Owns how each call of the :class:`server.jobs.JobTable` interface maps onto
the store's parts: a change updates this process's copy
(:mod:`server.store.copies`) and queues a write for the group-commit writer
(:mod:`server.store.writer`); a call that waits on the database is a
coroutine whose work (:mod:`server.store.queries`) runs in the store's
reader threads (:mod:`server.store.reader`). Records are committed before a
job is acknowledged (or kept for later, for a caller that waits for the
end); small results are stored with their record, and a retryable job's
request until it ends, so that a restarted server can answer for, and
re-run, what it accepted.
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import json
import logging
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa

from server.jobs import JobRecord, JobState, NewJob, make_page_token, page_bounds
from server.store import queries
from server.store.checkpoint import Checkpointer
from server.store.copies import Copies, Kept, not_found, request_json
from server.store.reader import Reader
from server.store.registry import ReplicaRegistry
from server.store.schema import (
    create_schema,
    lock_sqlite_file,
    make_engine,
    read_record,
    to_record,
)
from server.store.writer import Writer

logger = logging.getLogger(__name__)

T = TypeVar("T")


class SqlJobTable:
    """A :class:`server.jobs.JobTable` in a SQL database.

    Args:
        url: A SQLAlchemy URL: ``sqlite:///path/jobs.db`` (exclusive: one
            server's own, its file locked) or
            ``postgresql+psycopg://user:password@host/db`` (shared by replicas).
        instance_id: This server instance, recorded with the jobs it accepts.

    Raises:
        StoreInUse: Another server holds the SQLite file.
    """

    durable = True

    def __init__(self, url: str, instance_id: str = "") -> None:
        self.url = url
        self._lock_file = lock_sqlite_file(url)
        try:
            self.engine = make_engine(url)
            create_schema(self.engine)
            #: A SQLite store is one server's own (its file is locked): it alone writes it.
            self.exclusive = self.engine.dialect.name == "sqlite"
            # On a store of its own, this server numbers new records when it
            # accepts them: listings keep the order of acceptance, even for a
            # record stored later (insert_later). Shared stores number them
            # as they are written.
            next_seq = None
            if self.exclusive:
                with self.engine.connect() as conn:
                    next_seq = queries.max_seq(conn) + 1
        except BaseException:
            if self._lock_file is not None:
                self._lock_file.close()
            raise
        self.instance_id = instance_id
        self._copies = Copies(instance_id, self.exclusive, next_seq)
        self._writer = Writer(self.engine, keep_connection=self.exclusive)
        #: A SQLite file's log is checkpointed off the writer's path.
        self.checkpointer: Checkpointer | None = None
        if self.exclusive and sa.engine.make_url(url).database not in (None, "", ":memory:"):
            self.checkpointer = Checkpointer(self.engine, lambda: self._writer.commits)
        self._reader = Reader()
        self.registry: ReplicaRegistry | None = None
        if not self.exclusive:
            self.registry = ReplicaRegistry(self.engine, instance_id, self._writer, self._reader)
        # Idempotency keys stored before this server started (exclusive stores).
        self._earlier_keys: set[tuple[str, str]] | None = None
        self._closed = False

    # -- never block ----------------------------------------------------------

    def cached(self, job_id: str) -> JobRecord | None:
        """This process's copy of a record it accepted, changed or read, else ``None``.

        On a shared store a copy of another replica's record may be behind:
        :meth:`refresh` reads it again (as :meth:`get` does for such a copy).
        """
        return self._copies.get(job_id)

    def insert_many(self, entries: Sequence[NewJob]) -> concurrent.futures.Future[list[JobRecord]]:
        """Store new records in one transaction, off the caller's thread.

        Returns:
            A future of the records with their ``seq``, set once they are
            committed (or carrying the error).
        """
        future: concurrent.futures.Future[list[JobRecord]] = concurrent.futures.Future()
        self._writer.put(self._copies.insert_write(entries, future))
        return future

    def insert_later(self, entries: Sequence[NewJob], delay: float) -> list[JobRecord]:
        """Keep new records here now and store them within ``delay`` seconds.

        For jobs whose caller waits for them to end (a ``Run``): such a job
        starts at once, and if it ends within ``delay`` its record is stored
        once, finished, batched with others. A change that finishes a kept
        record (or a record kept finished) makes it due at once, so that its
        end is committed right away (see :meth:`committed`). Until stored,
        every read of this process (:meth:`get`, :meth:`refresh`) sees it, and
        every read of the database (listing, expiry) stores it first. A
        record whose server stops before it is stored is lost with the call
        that waited for it.

        Returns:
            The records as kept: numbered now on a store of this server's own,
            else once they are stored.
        """
        due = time.monotonic() + delay
        numbered = self._copies.number(len(entries))
        kept = [
            e.record if numbered is None else e.record.replace(seq=numbered[i])
            for i, e in enumerate(entries)
        ]
        how = [
            Kept(0.0 if r.state.finished else due, request_json(e.request))
            for r, e in zip(kept, entries, strict=True)
        ]
        self._copies.accept(kept, how)
        for record, keeping in zip(kept, how, strict=True):
            self._writer.put(self._copies.record_write(record, False, keeping.due))
        return kept

    def update_soon(self, job_id: str, *, delay: float = 0.0, **changes: Any) -> JobRecord:
        """Apply ``changes`` here now and write them with the next transaction.

        The write happens off the caller's thread, batched with others; with
        ``delay`` it waits that long and is dropped if a later change of the
        job comes first (which writes the whole record anyway). A change that
        finishes a record kept for later makes it due at once. A change of
        state applies only to an unfinished job: if another replica finished
        it first, the stored record wins and replaces this process's copy.

        Returns:
            The record as changed here.

        Raises:
            JobNotFound: This process holds no copy of the record.
        """
        record, kept = self._copies.change(job_id, changes)
        if kept is not None and self.exclusive and self._writer.deferred(job_id):
            # A record kept for later whose write still waits: that write
            # stores the record as it is when it is made, this change with it.
            if not kept.due:
                self._writer.expedite(job_id)
            return record
        due = time.monotonic() + delay if delay > 0 else 0.0
        if kept is not None:
            # A kept record is stored when it is due (at once once finished).
            due = max(due, kept.due) if kept.due else 0.0
        self._writer.put(self._copies.record_write(record, "state" in changes, due))
        return record

    def update_stored(
        self, job_id: str, **changes: Any
    ) -> tuple[JobRecord, concurrent.futures.Future[JobRecord]]:
        """Store ``changes`` with the next transaction; this process sees them once stored.

        As :meth:`update`, but the caller need not wait. A change of state
        applies only to an unfinished job: if another replica finished it
        first, the stored record wins. Until the write is committed,
        :meth:`cached` gives the record as it was: nobody here is told of a
        change the store may refuse.

        Returns:
            The record as changed, and a future of the record as stored (the
            other replica's, if its end won), set once the write is committed.

        Raises:
            JobNotFound: This process holds no copy of the record.
        """
        return self._store_change(self._copies.claim(job_id), changes, exact=False)

    def committed(self, job_id: str) -> concurrent.futures.Future[None]:
        """A future set once every write of ``job_id`` queued so far is committed.

        An insert kept for later counts (its time is waited for, unless a
        change finished the record). Already done when nothing is queued; it
        carries the exception of a write that failed.
        """
        return self._writer.committed(job_id)

    def store_result(
        self, job_id: str, blob: bytes | None, stored: Callable[[], None] | None = None
    ) -> None:
        """Keep (or, with ``None``, drop) a small pickled result with the record.

        Written with the next transaction, after the job's queued changes;
        ``stored`` is called (on the writer's thread) once it is committed. On
        a shared store a result is fenced by the lease, as a held job's record
        writes are: once another replica adopted the job, it is not written
        (and ``stored`` is not called).
        """
        kept = self._copies.kept(job_id)
        if kept is not None and kept.due:
            if blob is None:
                return  # nothing stored, and no record yet to drop it from
            record = self._copies.due_now(job_id)
            if record is not None:  # a record kept for later is stored now, before its result
                self._writer.put(self._copies.record_write(record, False))
        self._writer.put(self._copies.result_write(job_id, blob, stored))

    # -- may wait on the database: in the reader threads -------------------------

    async def get(self, job_id: str) -> JobRecord:
        """The copy here, else the stored record (whose copy is then kept).

        On a shared store, a copy of a record this process neither accepted
        nor changed is read again (another replica may have changed it).

        Raises:
            JobNotFound: No such record.
        """
        record = self._copies.held(job_id)
        if record is not None:
            return record
        return await self._reader.run(self._read, job_id)

    async def refresh(self, job_id: str) -> JobRecord:
        """The stored record, read again (another replica may have changed it).

        A record of this process with a write still queued is its own copy.

        Raises:
            JobNotFound: No such record.
        """
        if self._writer.pending(job_id):
            record = self._copies.get(job_id)
            if record is not None:
                return record
        return await self._reader.run(self._read, job_id)

    async def update(self, job_id: str, **changes: Any) -> JobRecord:
        """Apply ``changes`` and write them now (after what was queued); the record as stored.

        A change of state applies only to an unfinished job: a job that
        another replica (or an earlier run) already finished keeps the state
        it ended in, and the record returned is the stored one.

        Raises:
            JobNotFound: No such record.
        """
        base = self._copies.held(job_id) or await self.get(job_id)
        _, stored = self._store_change(self._copies.claim(job_id, base), changes, exact=True)
        return await asyncio.wrap_future(stored)

    async def list(
        self,
        states: Collection[JobState] = (),
        page_size: int = 0,
        page_token: str = "",
        owner: str | None = None,
    ) -> tuple[list[JobRecord], str]:
        """A page of records, newest first (what is queued is stored first).

        Raises:
            InvalidArgument: A bad page size or token.
        """
        size, below = page_bounds(page_size, page_token)
        rows = await self._query(queries.page, tuple(states), size + 1, below, owner)
        page = [self._copies.get(row.job_id) or to_record(row) for row in rows[:size]]
        return page, (make_page_token(page[-1].seq) if len(rows) > size else "")

    async def states_of(self, job_ids: Collection[str]) -> dict[str, JobState]:
        """The stored states of ``job_ids`` (past this process's copies)."""
        if not job_ids:
            return {}
        return await self._query(queries.states_of, list(job_ids), flush=False)

    async def find_requests(self, owner: str, request_ids: Iterable[str]) -> dict[str, JobRecord]:
        """The jobs ``owner`` submitted with the idempotency keys ``request_ids``, by key."""
        wanted = list(dict.fromkeys(request_ids))
        if self.exclusive:
            # Only this server writes the store: a key it has not seen since
            # it started (the core remembers those) must be in the keys stored
            # before then, which are read once, rather than once per job.
            if self._earlier_keys is None:
                self._earlier_keys = await self._query(queries.request_keys, flush=False)
            wanted = [key for key in wanted if (owner, key) in self._earlier_keys]
        if not wanted:
            return {}
        # No flush: records are stored before they are acknowledged, and
        # queued changes never touch the key; the copy here is overlaid.
        rows = await self._query(queries.by_request, owner, wanted, flush=False)
        # Oldest first: a key's latest job wins.
        return {row.request_id: self._copies.get(row.job_id) or to_record(row) for row in rows}

    async def find_request(self, owner: str, request_id: str) -> JobRecord | None:
        """:meth:`find_requests` for one key."""
        return (await self.find_requests(owner, [request_id])).get(request_id)

    async def unfinished(self) -> builtins.list[JobRecord]:
        """Records still queued or running, oldest first (after a restart: orphans)."""
        return await self._query(queries.unfinished)

    async def request_of(self, job_id: str) -> dict[str, Any] | None:
        """The stored request of an unfinished retryable job."""
        kept = self._copies.kept(job_id)
        if kept is not None:
            return json.loads(kept.request) if kept.request else None
        return await self._query(queries.request_of, job_id, flush=False)

    async def stored_result(self, job_id: str) -> bytes | None:
        """The result stored with the record, if any (one still queued is stored first)."""
        return await self._query(queries.stored_result, job_id, flush=self._writer.pending(job_id))

    async def stored_result_sizes(self, job_ids: Collection[str]) -> dict[str, int]:
        """The sizes of the results stored with those of ``job_ids`` that have one."""
        return await self._query(queries.stored_result_sizes, list(job_ids), flush=False)

    async def expire_results(self, before: float, keep: Collection[str] = ()) -> builtins.list[str]:
        """Drop the results of jobs finished before ``before`` (not ``keep``'s); their ids."""
        ids = await self._query(queries.expire_results, before, frozenset(keep))
        self._copies.expire(ids)
        return ids

    async def lose_unstored_results(self, why: str) -> builtins.list[str]:
        """After a restart: succeeded records whose result is not stored with them
        say it is gone (see :func:`server.store.queries.lose_results`); their ids."""
        ids = await self._query(queries.lose_results, why)
        self._copies.expire(ids)
        return ids

    async def why_no_result(self, job_id: str) -> str | None:
        """Why the job's result is gone, if it was lost rather than released or expired."""
        return await self._query(queries.result_gone, job_id, flush=False)

    async def finished_before(self, when: float) -> builtins.list[str]:
        """Ids of finished jobs whose finish time is before ``when``."""
        return await self._query(queries.finished_before, when)

    async def oldest_finished(self, count: int) -> builtins.list[str]:
        """Ids of the ``count`` oldest finished jobs."""
        return await self._query(queries.oldest_finished, count)

    async def delete(self, job_ids: Iterable[str]) -> None:
        """Forget records, here and in the store."""
        ids = list(job_ids)
        await self._query(queries.delete, ids)
        self._copies.forget(ids)

    async def count(self) -> int:
        """How many records the store holds (what is queued is stored first)."""
        return await self._query(queries.count)

    async def close(self) -> None:
        """Write what is queued, then release the connections (and the SQLite file's lock)."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._reader.run(self._close)
        finally:
            self._reader.close()

    # -- helpers ------------------------------------------------------------------

    def _store_change(
        self, base: JobRecord, changes: dict[str, Any], exact: bool
    ) -> tuple[JobRecord, concurrent.futures.Future[JobRecord]]:
        """Queue ``changes`` of ``base`` at once; the record changed, and a future of it stored."""
        stored: concurrent.futures.Future[JobRecord] = concurrent.futures.Future()
        record = base.replace(**changes)
        compare_state = "state" in changes
        write = self._copies.record_write(record, compare_state, 0.0, changes, exact, stored)
        self._writer.put(write)
        return record, stored

    async def _query(self, query: Callable[..., T], *args: Any, flush: bool = True) -> T:
        """``query(conn, *args)`` in one transaction, in a reader thread.

        ``flush``: store what is queued first (reads that filter on stored
        columns, or change rows a queued write would overwrite).
        """

        def run() -> T:
            if flush:
                self._writer.flush()
            with self.engine.begin() as conn:
                return query(conn, *args)

        return await self._reader.run(run)

    def _read(self, job_id: str) -> JobRecord:
        """Read a record, and keep its copy (unless this process changed it meanwhile)."""
        before = self._copies.get(job_id)
        with self.engine.connect() as conn:
            record = read_record(conn, job_id)
        if record is None:
            raise not_found(job_id)
        self._copies.keep_read(before, record, lambda: self._writer.pending(job_id))
        return record

    def _close(self) -> None:
        self._writer.close()
        if self.checkpointer is not None:
            self.checkpointer.close()
        self.engine.dispose()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None
