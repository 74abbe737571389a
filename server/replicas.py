"""Whether this server is alone with its job store, or one of several replicas sharing it.

One interface, two strategies, chosen once (:func:`for_store`), so that no
other part asks which mode it runs in:

- :class:`Alone`: the store is this server's own (memory or SQLite). A
  ``Run``'s record may be written together with its end, results are kept
  with their records and then let go on the cluster, and jobs left
  unfinished by an earlier run of the server are settled at start-up.
- :class:`Shared`: other replicas read and write the same (PostgreSQL)
  store. Every record is written before its job starts, a job's end is
  committed before anyone is told (another replica may have cancelled it:
  the stored record wins), results are published on the cluster as Dask
  datasets for the other replicas, this replica keeps a lease in the store
  (judged by the database's clock) and adopts the jobs of replicas whose
  lease ran out, and it notices the cancels other replicas record for its
  jobs. A replica whose jobs another adopted (its lease ran out: a long
  pause, a network partition) is fenced off them: its writes of their
  records no longer apply (the store fences them by the holding instance),
  it publishes no result while its lease may have run out, and at its next
  look it stops them quietly; nobody here is told of an end the store does
  not hold.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

from server.cluster import SCHEDULER_TIMEOUT, SNAPSHOT_INTERVAL, Cluster
from server.cluster_results import ClusterResult
from server.config import Settings
from server.execution import Executors
from server.jobs import JobKind, JobRecord, JobState, JobTable
from server.runner import task_key
from server.uploads import SharedUploads, Uploads

logger = logging.getLogger(__name__)

#: Seconds a job runs before its RUNNING state is written (shorter jobs skip that write).
RUNNING_WRITE_DELAY = 0.25

#: Seconds the record of a released result that was never stored with it waits
#: to be written, so that many go in one commit (a ``Run`` that releases its
#: result inline is one a call: without the wait, each would cost a commit).
RELEASE_WRITE_DELAY = 0.25

#: Called on the event loop with a job's record once its end is stored.
Ended = Callable[[JobRecord], None]


class Alone:
    """The store is this server's own; see the module docstring."""

    defers_waited_records = True
    running_write_delay = RUNNING_WRITE_DELAY
    stores_results_first = False
    lets_go_when_stored = True

    def __init__(self, store: JobTable, cluster: Cluster, pools: Callable[[], Executors]) -> None:
        self.store = store
        self.cluster = cluster
        self.pools = pools
        # Jobs whose end is being written: their records as stored until it is.
        self._ending: dict[str, JobRecord] = {}

    def ending(self, job_id: str) -> bool:
        """Whether the job's end is being written."""
        return job_id in self._ending

    def as_stored(self, record: JobRecord) -> JobRecord:
        """``record`` as the store holds it: while its end is being written, as it was.

        Nobody is told of an end the store may not hold yet.
        """
        return self._ending.get(record.job_id, record)

    def record_end(self, job_id: str, now: float, ended: Ended, **changes: Any) -> JobRecord:
        """Write a job's end (``changes``, at ``now``); ``ended`` is told once it is committed.

        The end rides on the store's next batch (with the job's insert, if that
        was kept for later): group commit, so a burst of ends costs one
        transaction, and nobody waits on the database on the event loop.
        """
        before = self.store.cached(job_id)
        record = self.store.update_soon(job_id, finish_time=now, **changes)
        committed = self.store.committed(job_id)
        if committed.done() and committed.exception() is None:  # (in memory: at once)
            ended(record)
            return record
        if before is not None:
            self._ending[job_id] = before
        _on_loop(committed, self._written, job_id, record, ended)
        return record

    def _written(
        self,
        job_id: str,
        record: JobRecord,
        ended: Ended,
        outcome: concurrent.futures.Future[Any],
    ) -> None:
        """A job's end is written (or failed to be): tell ``ended``, with the stored
        record when the write gives one back (another replica's end may have won)."""
        self._ending.pop(job_id, None)
        error = outcome.exception()
        if error is not None:
            logger.error("job=%s its end could not be stored: %s", job_id, error)
        elif isinstance(stored := outcome.result(), JobRecord):
            if not stored.state.finished:  # (the runner lets it go: see Runner._wake)
                logger.warning(
                    "job=%s another replica holds it now: its end here is dropped", job_id
                )
            elif stored.state is not record.state:
                logger.info("job=%s was %s by another replica first", job_id, stored.state.value)
            record = stored
        ended(record)

    async def record_release(self, job_id: str, stored: bool = True) -> JobRecord:
        """Record that a job's result is gone; returns the record.

        ``stored``: the result may be kept with the record, and goes from the
        store now. One that never was (a ``Run``'s, answered inline) is gone
        with this process anyway (after a restart its record says so): its
        release is written a moment later, with the others due by then.
        """
        if not stored:
            return self.store.update_soon(job_id, delay=RELEASE_WRITE_DELAY, result_available=False)
        record = self.store.update_soon(job_id, result_available=False)
        self.store.store_result(job_id, None)
        return record

    async def current(self, record: JobRecord) -> JobRecord:
        """The record as it stands now (no other writer: as this server has it)."""
        return record

    async def publish_result(self, job_id: str, result: ClusterResult) -> bool:
        """Publish a result for other replicas; returns whether it was."""
        return False

    async def unpublish(self, job_ids: Iterable[str]) -> None:
        """Drop the published results of ``job_ids``."""

    async def published_result(self, job_id: str) -> ClusterResult | None:
        """The result another replica published for ``job_id``."""
        return None

    async def cancel_elsewhere(self, record: JobRecord, reason: str) -> tuple[JobRecord, bool]:
        """Cancel an unfinished job this server does not run (another replica does).

        The cancel is recorded in the store (that replica sees it at its next
        look) and the job's task on the cluster is stopped now.

        Returns:
            The stored record, and whether this call cancelled it.
        """
        _, stored = self.store.update_stored(
            record.job_id, state=JobState.CANCELLED, finish_time=time.time(), cancel_reason=reason
        )
        record = await asyncio.wrap_future(stored)
        if record.state is not JobState.CANCELLED or record.cancel_reason != reason:
            return record, False  # it finished first
        if record.scheduler == "distributed" and record.kind is not JobKind.GRAPH:
            await self.cluster.cancel_task(task_key(record.target, record.job_id), reason)
        return record, True

    def background(self, recovery: Any) -> list[asyncio.Task]:
        """The strategy's own loops, started with the core."""
        return []

    async def at_start(self, recovery: Any) -> None:
        """Settle the jobs an earlier run of this server left unfinished."""
        await recovery.after_restart()

    async def on_look(self, runner: Any) -> None:
        """After each look at the cluster."""

    async def close(self) -> None:
        """Leave the store (nothing to do alone)."""


class Shared(Alone):
    """Replicas share the store; see the module docstring.

    Args:
        lease: Seconds a replica may go unseen before another adopts its jobs.
    """

    defers_waited_records = False
    running_write_delay = 0.0
    stores_results_first = True
    lets_go_when_stored = False

    def __init__(
        self, store: JobTable, cluster: Cluster, pools: Callable[[], Executors], lease: float
    ) -> None:
        super().__init__(store, cluster, pools)
        assert store.registry is not None, "a shared store has a replica registry"
        self.registry = store.registry
        self.lease = lease
        # Until when (time.monotonic()) this replica surely holds its lease:
        # ``lease`` seconds after it last sent a renewal that the store took.
        self._lease_until = -math.inf
        # Jobs another replica adopted from this one: ended, as far as this one goes.
        self._lost: set[str] = set()

    def record_end(self, job_id: str, now: float, ended: Ended, **changes: Any) -> JobRecord:
        """Write a job's end; ``ended`` is told the stored record once committed.

        Until then the job reads as unfinished here: another replica may have
        ended it first (a cancel), and the stored record wins.
        """
        record, stored = self.store.update_stored(job_id, finish_time=now, **changes)
        # (update_stored leaves the copy here as it was until the write is committed.)
        self._ending[job_id] = record
        _on_loop(stored, self._written, job_id, record, ended)
        return record

    def as_stored(self, record: JobRecord) -> JobRecord:
        return record  # (the copy here changes only once the write is committed)

    def ending(self, job_id: str) -> bool:
        """Whether the job's end is being written, or another replica holds it now."""
        return job_id in self._ending or job_id in self._lost

    def _written(
        self,
        job_id: str,
        record: JobRecord,
        ended: Ended,
        outcome: concurrent.futures.Future[Any],
    ) -> None:
        if outcome.exception() is None and not outcome.result().state.finished:
            self._lost.add(job_id)  # (its end here was not recorded: see Runner._wake)
        super()._written(job_id, record, ended, outcome)

    async def record_release(self, job_id: str, stored: bool = True) -> JobRecord:
        # Other replicas must see it gone once this answers (``stored`` or not).
        self.store.store_result(job_id, None)
        _, written = self.store.update_stored(job_id, result_available=False)
        return await asyncio.wrap_future(written)

    async def current(self, record: JobRecord) -> JobRecord:
        """The stored record (another replica may have released its result)."""
        return await self.store.refresh(record.job_id)

    async def publish_result(self, job_id: str, result: ClusterResult) -> bool:
        """Publish a result on the cluster as a Dask dataset, so any replica can fetch it.

        It stays there, held by the scheduler, until released or expired,
        even if this replica goes away. Not while this replica's lease may
        have run out: another may have adopted the job, and its result is
        that replica's to publish.
        """
        if not self.holds_lease():
            logger.warning(
                "job=%s result not published: this replica's lease may have run out", job_id
            )
            return False
        try:
            await asyncio.wait_for(
                self.cluster.client.publish_dataset(**{dataset_name(job_id): result.published()}),
                SCHEDULER_TIMEOUT,
            )
        except Exception as exc:  # served from here only
            logger.warning("job=%s result not published for other replicas: %s", job_id, exc)
            return False
        return True

    async def unpublish(self, job_ids: Iterable[str]) -> None:
        """Drop the published results of ``job_ids`` (those never published are skipped)."""
        client = self.cluster.client
        if client is None:
            return
        try:
            names = [dataset_name(job_id) for job_id in job_ids]
            if len(names) > 1:  # (expiry) those published, asked once
                published = set(await asyncio.wait_for(client.list_datasets(), SCHEDULER_TIMEOUT))
                names = [name for name in names if name in published]
            for name in names:  # the scheduler ignores a name it does not hold
                await client.unpublish_dataset(name)
        except Exception as exc:  # expiry comes round again
            logger.warning("could not drop published results: %s", exc)

    async def published_result(self, job_id: str) -> ClusterResult | None:
        if self.cluster.client is None or not self.cluster.ok:
            return None
        try:
            data = await asyncio.wait_for(
                self.cluster.client.get_dataset(dataset_name(job_id)), SCHEDULER_TIMEOUT
            )
        except Exception:  # no such dataset (released, expired, or never published)
            return None
        return ClusterResult.from_published(data)

    async def at_start(self, recovery: Any) -> None:
        """Nothing: other replicas' running jobs are not orphans. A dead
        replica's jobs are adopted when its lease runs out (:meth:`keep_lease`)."""

    def background(self, recovery: Any) -> list[asyncio.Task]:
        return [asyncio.create_task(self.keep_lease(recovery), name="replica-lease")]

    def holds_lease(self) -> bool:
        """Whether this replica surely still holds its lease (by its own monotonic
        clock, counted from before its last renewal was sent: the store's clock
        stamped it later, so the lease lasts at least that long)."""
        return time.monotonic() < self._lease_until

    async def keep_lease(self, recovery: Any) -> None:
        """Renew this replica's lease, and take over dead replicas' jobs.

        Leases are written and judged by the database's clock (the
        registry's), never this replica's ``time.time()``.
        """
        lease = self.lease
        while True:
            sent = time.monotonic()
            try:
                orphans = await self.registry.adopt_orphans(lease)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("could not renew this replica's lease in the job store: %s", exc)
            else:
                self._lease_until = sent + lease
                if orphans:
                    why = f"its replica stopped answering for {lease:g}s"
                    await recovery.settle(orphans, why, "ReplicaLost")
                    logger.warning(
                        "took over %d unfinished jobs of replicas unseen for %gs: %s",
                        len(orphans),
                        lease,
                        ", ".join(r.job_id for r in orphans),
                    )
            await asyncio.sleep(min(SNAPSHOT_INTERVAL, lease / 3))

    async def on_look(self, runner: Any) -> None:
        """Notice jobs of ours that another replica cancelled in the shared store,
        or adopted (this replica's lease ran out): those are stopped quietly,
        and their records here are the holder's (see Runner._wake)."""
        mine = runner.running()
        if not mine:
            return
        try:
            holders = await self.registry.holders_of(mine)
        except Exception as exc:
            logger.warning("could not read the shared job store: %s", exc)
            return
        me = self.registry.instance_id
        for job_id, (state, holder) in holders.items():
            if holder != me:
                logger.warning(
                    "job=%s replica %s adopted it (this replica's lease ran out): "
                    "stopped here, without recording its end",
                    job_id,
                    holder,
                )
                runner.cancel(job_id, f"adopted by replica {holder}")
            elif state.finished:
                record = runner.finish(job_id, state)
                runtime = runner.runtimes.get(job_id)
                if runtime is not None:
                    runtime.stop(record.cancel_reason or f"{state.value} through another replica")
                logger.info("job %s was %s through another replica", job_id, state.value)

    async def close(self) -> None:
        try:
            await self.registry.leave()  # no replica need wait out this one's lease
        except Exception as exc:
            logger.warning("could not leave the shared job store cleanly: %s", exc)


def _on_loop(
    future: concurrent.futures.Future[Any], callback: Callable[..., None], *args: Any
) -> None:
    """Call ``callback(*args, future)`` on the running event loop once ``future``
    (set in one of the store's threads) is done."""
    loop = asyncio.get_running_loop()

    def done(outcome: concurrent.futures.Future[Any]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            # (mypy 2.4 matches no Callable[..., None] against this TypeVarTuple signature)
            loop.call_soon_threadsafe(callback, *args, outcome)  # type: ignore[arg-type]

    future.add_done_callback(done)


def strategies(
    settings: Settings, store: JobTable, cluster: Cluster, pools: Callable[[], Executors]
) -> tuple[Alone, Uploads]:
    """The replicas strategy and the uploads that fit ``store``: the one place that
    asks whether other replicas share it."""
    s = settings
    limits = {
        "max_uploads_per_caller": s.max_uploads_per_caller,
        "max_upload_bytes_per_caller": s.max_upload_bytes_per_caller,
        "max_upload_bytes": s.upload_bytes_bound,
    }
    if store.exclusive:
        alone = Uploads(cluster, store, s.object_ttl, s.max_object_bytes, **limits)
        return Alone(store, cluster, pools), alone
    shared = SharedUploads(cluster, store, s.object_ttl, s.max_object_bytes, **limits)
    return Shared(store, cluster, pools, s.replica_lease), shared


def dataset_name(job_id: str) -> str:
    """The name of a job's result published on the cluster for other replicas."""
    return f"dask-compute-result-{job_id}"
