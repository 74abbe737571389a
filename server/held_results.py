"""Results of succeeded jobs: held, kept with their records, served, released.

:class:`HeldResults` owns what the server holds of each succeeded job's
result: the value itself (local schedulers) or a :class:`ClusterResult`
handle to futures on the cluster, and whether it was released or published.
A small result is also pickled into the job's durable record a moment after
the job ends (so it outlives a restart and the cluster can let it go);
results are served inline, or as a stream when large; release and expiry
free them. How other replicas see a result (published on the cluster, or
read from the shared store) is the replicas strategy's business.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from dask.sizeof import sizeof

from server import _pickle, results, worker_stream
from server.cluster import SCHEDULER_TIMEOUT
from server.cluster_results import ClusterResult, estimated_sizes, fetch_many
from server.errors import FailedPrecondition, NotFound
from server.execution import Executors
from server.jobs import JobKind, JobRecord, JobState, JobTable

# By name: in the class, `results` is its method (annotations resolve there).
from server.results import EncodedResult, ResultStream

logger = logging.getLogger(__name__)

#: Seconds after a job ends before its small result is kept with its record.
STORE_RESULT_DELAY = 0.05

_NO_RESULT = object()
#: A result the record says is there, not loaded yet (see HeldResults.handle).
_STORED = object()


@dataclasses.dataclass
class _Held:
    """What is held of one job's result."""

    result: Any = _NO_RESULT
    released: bool = False
    # While its result waits to be kept with the record: the value, if a
    # caller fetched it meanwhile (so it is not fetched from the cluster twice).
    keeping: bool = False
    fetched: Any = _NO_RESULT
    # Its caller waits for it and drops the result once answered (a Run with
    # release): the result is never kept with the record, nor published.
    answered_once: bool = False
    published: bool = False
    # The result as its check encoded it in the job's thread
    # (server.result_checks), until the inline answer or the record's copy
    # that would encode it again has used it.
    encoded: results.EncodedResult | None = None


class HeldResults:
    """See the module docstring.

    Args:
        store: The job records (and results kept with them).
        replicas: The replicas strategy (publishing, shared reads).
        pools: The core's pools (for encoding and pickling off the event loop).
        get_job: The record of a job, if the caller may see it.
        stored_result_bytes: Results up to this size (pickled) are kept with records.
        inline_result_bytes: Results up to this size are answered inline.
        result_ttl: Seconds results are kept (for messages).
    """

    def __init__(
        self,
        store: JobTable,
        replicas: Any,
        pools: Callable[[], Executors],
        get_job: Callable[[str, Any], Awaitable[JobRecord]],
        stored_result_bytes: int,
        inline_result_bytes: int,
        result_ttl: float,
    ) -> None:
        self.store = store
        self.replicas = replicas
        self.pools = pools
        self.get_job = get_job
        self.stored_result_bytes = stored_result_bytes
        self.inline_result_bytes = inline_result_bytes
        self.result_ttl = result_ttl
        self._held: dict[str, _Held] = {}
        self._storing: set[asyncio.Task] = set()

    def answer_once(self, job_id: str) -> None:
        """The job's only reader drops its result once answered: never keep or publish it."""
        self._held.setdefault(job_id, _Held()).answered_once = True

    def holds(self, job_id: str) -> bool:
        """Whether this server holds the job's result (in memory or on the cluster)."""
        held = self._held.get(job_id)
        return held is not None and held.result is not _NO_RESULT

    # -- keeping -----------------------------------------------------------

    async def keep(
        self, job_id: str, value: Any, encoded: results.EncodedResult | None = None
    ) -> Callable[[], None] | None:
        """Hold a job's result as it succeeds (before it is marked so).

        ``encoded`` is the value as its check encoded it
        (:mod:`server.result_checks`): it is held only while a use for it is
        due, so that the value is not encoded twice: the inline answer of a
        ``Run`` that releases its result, or, until the result is kept with
        the record, that copy and the answers asked meanwhile.

        Returns:
            What to call once the job is marked succeeded: it keeps a small
            result with the durable record a moment later (or ``None``).
        """
        held = self._held.setdefault(job_id, _Held())
        held.result = value
        if isinstance(value, ClusterResult) and not held.answered_once:
            held.published = await self.replicas.publish_result(job_id, value)
        keep = self.store.durable and self.stored_result_bytes and not held.answered_once
        if encoded is not None:
            size = encoded.size_bytes
            answer = (held.answered_once or keep) and size <= self.inline_result_bytes
            copy = keep and encoded.format == "pickle" and size <= self.stored_result_bytes
            held.encoded = encoded if answer or copy else None
        if not keep:
            return None
        if self.replicas.stores_results_first:
            # Shared with other replicas, which read small results from the
            # store: it must be there before the job is seen to succeed.
            try:
                await self._store_now(job_id, value)
            except Exception as exc:
                logger.warning("job=%s result not stored with its record: %s", job_id, exc)
            held.encoded = None
            return None

        def store_later() -> None:
            held.keeping = True
            task = asyncio.create_task(self._store_later(job_id, value))
            self._storing.add(task)
            task.add_done_callback(self._storing.discard)

        return store_later

    async def _store_later(self, job_id: str, value: Any) -> None:
        """Keep a small result with the durable record, so it outlives a restart.

        Done a moment after the job ends, off its path: a result released at
        once (a ``Run`` answered inline) is never fetched or written.
        """
        try:
            await asyncio.sleep(STORE_RESULT_DELAY)
            held = self._held.get(job_id)
            if held is None or held.result is not value:
                return  # released or expired meanwhile
            await self._store_now(job_id, value)
        except Exception as exc:  # the result is still served from the cluster
            logger.warning("job=%s result not stored with its record: %s", job_id, exc)
        finally:
            held = self._held.get(job_id)
            if held is not None:
                held.keeping, held.fetched, held.encoded = False, _NO_RESULT, None

    async def _store_now(self, job_id: str, handle: Any) -> None:
        held = self._held.get(job_id)
        value = handle
        if isinstance(handle, ClusterResult):
            if held is not None and held.fetched is not _NO_RESULT:
                value = held.fetched  # a caller fetched it already
            elif await self.estimate_size(handle) > self.stored_result_bytes:
                return
            else:
                value = await handle.fetch()
        encoded = held.encoded if held is not None and held.result is handle else None
        try:
            if encoded is not None and encoded.format == "pickle":
                blob = encoded.pickle  # pickled as the job's result was checked
            elif results.small_for_inline(value):
                blob = _pickle.dumps(value)
            else:
                blob = await self.pools().in_thread(_pickle.dumps, value)
        except Exception:  # unpicklable results are served from memory only
            logger.debug("result of job %s cannot be pickled; not stored", job_id)
            return
        if len(blob) > self.stored_result_bytes or held is None or held.result is not handle:
            return
        stored = None
        if isinstance(handle, ClusterResult) and self.replicas.lets_go_when_stored:
            # Once the blob is committed the store serves the result and the
            # cluster lets it go, so a worker's death never re-runs a job
            # that already succeeded only to rebuild a result held for it.
            loop = asyncio.get_running_loop()

            def stored() -> None:
                loop.call_soon_threadsafe(self._let_go, job_id, handle)

        self.store.store_result(job_id, blob, stored)  # unless released meanwhile

    def _let_go(self, job_id: str, handle: Any) -> None:
        """Drop the cluster's copy of a result now kept with its record."""
        held = self._held.get(job_id)
        if held is not None and held.result is handle:
            held.result = _NO_RESULT

    # -- serving -----------------------------------------------------------

    async def result(self, job_id: str, fmt: str, caller: Any) -> results.EncodedResult:
        """The result of a succeeded job, encoded as ``fmt`` (see ComputeCore.result)."""
        record, handle = await self.handle(job_id, caller)
        estimate = await self.estimate_size(handle)
        if estimate > self.inline_result_bytes:
            return results.EncodedResult("auto", size_bytes=estimate, streamed=True)
        value = await handle.fetch() if isinstance(handle, ClusterResult) else handle
        self._lend(job_id, handle, value)
        return await self._encode_inline(record, value, fmt)

    def _lend(self, job_id: str, handle: Any, value: Any) -> None:
        """Hand a fetched result to its job's pending store, which then need not fetch it."""
        held = self._held.get(job_id)
        if held is not None and held.keeping and held.result is handle:
            held.fetched = value

    async def results(
        self, job_ids: list[str], fmt: str, caller: Any, budget: int | None = None
    ) -> list[results.EncodedResult | None]:
        """The results of many succeeded jobs (see ComputeCore.results).

        With ``budget`` (bytes), only the first results whose estimated sizes
        fit in it are fetched and encoded (at least one): the list answers a
        prefix of ``job_ids``, and the rest are not touched. Sizes are
        estimated before anything is fetched: one question to the scheduler
        for the results on the cluster, one query for those kept with their
        records. A result too large to be answered inline costs nothing (it
        is a pointer to GetJobResult), and so does one that cannot be encoded
        (it cannot be pickled, or has no form of the one asked for): it does
        not sink the others, and GetJobResult says why.
        """
        entries: list[tuple[JobRecord, Any] | None] = []
        for job_id in job_ids:
            try:
                entries.append(await self.handle(job_id, caller, load=False))
            except NotFound:
                entries.append(None)
        if budget is not None:
            entries = entries[: await self._fitting(entries, budget)]
        for index, entry in enumerate(entries):
            if entry is not None and entry[1] is _STORED:  # loaded now that it is wanted
                try:
                    entries[index] = await self.handle(entry[0].job_id, caller)
                except NotFound:
                    entries[index] = None
        held = [h for h in entries if h is not None and isinstance(h[1], ClusterResult)]
        sizes = await estimated_sizes([handle for _, handle in held], SCHEDULER_TIMEOUT)
        limit = self.inline_result_bytes
        small = [h for h, size in zip(held, sizes, strict=True) if size <= limit]
        big = {id(h): size for h, size in zip(held, sizes, strict=True) if size > limit}
        try:
            fetched = await fetch_many([handle for _, handle in small])
        except Exception:  # one lost result: fetch each alone, so the others still come
            fetched = [await handle.fetch() for _, handle in small]
        values = {id(h): value for h, value in zip(small, fetched, strict=True)}
        for (record, handle), value in zip(small, fetched, strict=True):
            self._lend(record.job_id, handle, value)
        encoded: list[results.EncodedResult | None] = []
        for entry in entries:
            if entry is None:
                encoded.append(None)
            elif id(entry) in big:
                encoded.append(
                    results.EncodedResult("auto", size_bytes=big[id(entry)], streamed=True)
                )
            else:
                try:
                    if id(entry) in values:
                        value = await self._encode_inline(entry[0], values[id(entry)], fmt)
                    else:
                        value = await self.result(entry[0].job_id, fmt, caller)
                except FailedPrecondition:  # see the docstring: GetJobResult says why
                    value = results.EncodedResult("auto", size_bytes=0, streamed=True)
                encoded.append(value)
        return encoded

    async def _fitting(self, entries: list[tuple[JobRecord, Any] | None], budget: int) -> int:
        """How many of ``entries`` (at least one) have results whose estimates fit in ``budget``."""
        on_cluster = [e for e in entries if e is not None and isinstance(e[1], ClusterResult)]
        estimates = dict(
            zip(
                map(id, on_cluster),
                await estimated_sizes([h for _, h in on_cluster], SCHEDULER_TIMEOUT),
                strict=True,
            )
        )
        stored = [e[0].job_id for e in entries if e is not None and e[1] is _STORED]
        stored_sizes = await self.store.stored_result_sizes(stored) if stored else {}
        for count, entry in enumerate(entries):
            if entry is None:
                continue
            record, handle = entry
            if id(entry) in estimates:
                size = estimates[id(entry)]
            elif handle is _STORED:
                size = stored_sizes.get(record.job_id) or 0
            else:
                size = await self.estimate_size(handle)
            if size > self.inline_result_bytes:
                continue  # answered with a pointer to GetJobResult
            if size > budget and count:
                return count
            budget -= size
        return len(entries)

    async def _encode_inline(self, record: JobRecord, value: Any, fmt: str) -> EncodedResult:
        """``value`` encoded for an answer, or a pointer to GetJobResult when too large."""
        if fmt == "auto":
            fmt = record.result_format
        is_function = record.kind is JobKind.FUNCTION
        encoded = self._encoded(record.job_id, value, fmt, is_function)
        if encoded is None and results.small_for_inline(value):
            encoded = results.encode(value, fmt, is_function)
        elif encoded is None:
            encoded = await self.pools().in_thread(results.encode, value, fmt, is_function)
        if encoded.size_bytes > self.inline_result_bytes:
            return results.EncodedResult(
                encoded.format, size_bytes=encoded.size_bytes, streamed=True
            )
        return encoded

    def _encoded(
        self, job_id: str, value: Any, fmt: str, is_function: bool
    ) -> EncodedResult | None:
        """The check's encoding of ``value``, if it is the one ``fmt`` asks for.

        A ``Run`` that releases its result reads it once: its encoding is
        dropped once used.
        """
        held = self._held.get(job_id)
        encoded = held.encoded if held is not None and held.result is value else None
        if encoded is None:
            return None
        if encoded.format == "json":
            fits = fmt == "json" or (fmt == "auto" and is_function)
        else:
            fits = results.is_pickle(fmt, is_function)
        if not fits:
            return None
        if held is not None and held.answered_once:
            held.encoded = None
        return encoded

    async def handle(self, job_id: str, caller: Any, load: bool = True) -> tuple[JobRecord, Any]:
        """The record and the result (a value, or a :class:`ClusterResult`) of a succeeded job.

        Without ``load``, a result this server does not hold but the record
        says is there (kept with it, or another replica's) is :data:`_STORED`,
        for a later call with ``load``.
        """
        record = await self.get_job(job_id, caller)
        if record.state is not JobState.SUCCEEDED:
            raise FailedPrecondition(
                f"job {job_id} is {record.state.value}; only succeeded jobs have a result",
                reason="JOB_NOT_SUCCEEDED",
                metadata={"job_id": job_id, "state": record.state.value},
            )
        held = self._held.get(job_id)
        handle = held.result if held is not None else _NO_RESULT
        if held is not None and handle is not _NO_RESULT:
            # Another replica may have released it: the shared record says.
            record = await self.replicas.current(record)
            if not record.result_available:
                held.result, held.released, handle = _NO_RESULT, True, _NO_RESULT
        if handle is _NO_RESULT and record.result_available and not load:
            return record, _STORED
        if handle is _NO_RESULT and record.result_available:
            # From before a restart, or another replica's.
            blob = await self.store.stored_result(job_id)
            if blob is not None:
                handle = await self.pools().in_thread(_pickle.load_payload, blob, "stored result")
            else:  # another replica's result, too large to store, published on the cluster
                published = await self.replicas.published_result(job_id)
                if published is not None:
                    handle = published
        if handle is _NO_RESULT:
            if held is not None and held.released:
                raise NotFound(
                    f"the result of job {job_id} was released by ReleaseJob",
                    reason="RESULT_RELEASED",
                    resource_type="result",
                    resource_name=job_id,
                    metadata={"job_id": job_id},
                )
            why = await self.store.why_no_result(job_id) if held is None else None
            if why:
                raise NotFound(
                    f"the result of job {job_id} is gone: {why}",
                    reason="RESULT_GONE",
                    resource_type="result",
                    resource_name=job_id,
                    metadata={"job_id": job_id},
                )
            raise NotFound(
                f"the result of job {job_id} is gone: results are kept for "
                f"{self.result_ttl:g}s after a job finishes",
                reason="RESULT_EXPIRED",
                resource_type="result",
                resource_name=job_id,
                metadata={"job_id": job_id, "result_ttl_seconds": f"{self.result_ttl:g}"},
            )
        return record, handle

    async def estimate_size(self, handle: Any) -> int:
        """About how many bytes a result (a value or a cluster handle) takes."""
        if isinstance(handle, ClusterResult):
            return (await estimated_sizes([handle], SCHEDULER_TIMEOUT))[0]
        if results.small_for_inline(handle):
            return 0
        return await self.pools().in_thread(sizeof, handle)

    async def open(
        self, job_id: str, fmt: str, caller: Any, checksum: bool
    ) -> ResultStream | worker_stream.WorkerStream:
        """A succeeded job's result, encoded for streaming.

        A pickle held on the cluster by one future is encoded and hashed by
        the worker that holds it, and read from there as it is sent (a
        :class:`server.worker_stream.WorkerStream`). Otherwise the value is
        fetched from the cluster (where it stays until released or expired),
        encoded off the event loop, and held only by the stream. Without
        ``checksum`` the stream's ``sha256`` is left empty, for the caller to
        get with the stream's ``digest()`` while it sends.
        """
        record, handle = await self.handle(job_id, caller)
        if fmt == "auto":
            fmt = record.result_format
        is_function = record.kind is JobKind.FUNCTION
        value = handle
        if isinstance(handle, ClusterResult):
            # A pickle read from its worker as it is sent (server.worker_stream);
            # else the value, fetched here whole.
            stream = await handle.open_stream(fmt, is_function)
            if stream is not None:
                if checksum:
                    await stream.digest()
                return stream
            value = await handle.fetch(large=True)
        return await self.pools().in_thread(
            results.encode_stream, value, fmt, is_function, checksum
        )

    # -- freeing -----------------------------------------------------------

    async def release(self, job_id: str, caller: Any) -> tuple[JobRecord, bool]:
        """Free a finished job's result now (on the cluster too); returns whether there was one."""
        record = await self.get_job(job_id, caller)
        held = self._held.get(job_id)
        had = record.result_available
        if held is not None:
            had = had or held.result is not _NO_RESULT
            held.result, held.encoded = _NO_RESULT, None
            held.released = True
        if record.result_available:
            kept = held is None or not held.answered_once  # (answered once: never kept)
            record = await self.replicas.record_release(job_id, kept)
        if held is None or held.published:  # (a job of this replica's says whether)
            await self.replicas.unpublish([job_id])
        return record, had

    async def expire(self, before: float, keep: Collection[str] = ()) -> None:
        """Drop the results of jobs that finished before ``before``, but those in ``keep``."""
        expired = await self.store.expire_results(before, keep)
        for job_id in expired:
            held = self._held.get(job_id)
            if held is not None:
                held.result, held.encoded = _NO_RESULT, None
        if expired:
            self.background(self.replicas.unpublish(expired))

    def background(self, work: Any) -> None:
        """Run ``work`` in a task that :meth:`close` waits for."""
        task = asyncio.get_running_loop().create_task(work)
        self._storing.add(task)
        task.add_done_callback(self._storing.discard)

    def forget(self, job_ids: set[str]) -> None:
        """Drop what is held for expired records."""
        for job_id in job_ids:
            self._held.pop(job_id, None)

    async def close(self) -> None:
        """Stop keeping results with records (what is queued is written by the store)."""
        tasks = list(self._storing)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
