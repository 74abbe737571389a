"""The service's behaviour, with no gRPC in sight.

:class:`ComputeCore` owns the Dask cluster (or the connection to an existing
scheduler), the long-lived asynchronous :class:`distributed.Client`, the local
schedulers' pools, the named-function registry and the job table. It takes and
returns plain Python objects and raises :mod:`server.errors`; the servicer only
translates.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import dataclasses
import logging
import platform
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Coroutine,
    Iterable,
    Mapping,
    Sequence,
)
from typing import Any

from dask.sizeof import sizeof

from server import _pickle, objects, results, worker_stream
from server.auth import ANONYMOUS, Caller
from server.config import SCHEDULERS, Settings
from server.errors import (
    FailedPrecondition,
    InvalidArgument,
    JobNotFound,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    ServiceError,
    Unavailable,
)
from server.execution import (
    DIRECT_GATHER_TIMEOUT,
    ClusterResult,
    Executors,
    Work,
    fetch_many,
    nbytes_many,
)
from server.jobs import (
    JobError,
    JobKind,
    JobRecord,
    JobState,
    JobTable,
    MemoryJobTable,
    new_job_id,
)
from server.logwriter import log_event
from server.metrics import Metrics
from server.progress import Progress
from server.registry import FunctionSpec, Registry

logger = logging.getLogger(__name__)

#: Payloads smaller than this are unpickled on the event loop; larger ones in a thread.
INLINE_LOAD_LIMIT = 64 * 1024
#: Most jobs in one SubmitJobs call.
MAX_BATCH = 10_000
#: How often the cached cluster snapshot (sent with each Run) is refreshed, in seconds.
SNAPSHOT_INTERVAL = 2.0
#: How long a look at the scheduler may take before it counts as a failure, in seconds.
SCHEDULER_TIMEOUT = 5.0
#: Longest pause between looks at the shared store while waiting for another replica's job.
FOREIGN_POLL_INTERVAL = 1.0
#: Seconds a job runs before its RUNNING state is written (shorter jobs skip that write).
RUNNING_WRITE_DELAY = 0.25
#: Seconds within which the record of a job whose caller waits (a Run) is stored:
#: one that ends sooner is stored once, finished, with others.
WAITED_WRITE_DELAY = RUNNING_WRITE_DELAY
#: Seconds after a job ends before its small result is kept with its record.
STORE_RESULT_DELAY = 0.05
#: How often expired results and records are dropped, in seconds.
JANITOR_INTERVAL = 30.0

_NO_RESULT = object()


@dataclasses.dataclass(frozen=True)
class JobRequest:
    """What a caller asks to run.

    Attributes:
        kind: Which of the fields below carry the work.
        function: The named function (``JobKind.FUNCTION``).
        args: Its positional arguments, decoded JSON.
        kwargs: Its keyword arguments, decoded JSON.
        payload: Serialized work (``PICKLED_CALL`` and ``GRAPH``).
        scheduler: A name from :data:`server.config.SCHEDULERS`, or "" for the default.
        result_format: "auto", "json" or "pickle".
        name: The caller's label.
        request_id: The caller's idempotency key ("" for none).
        retryable: Whether a restart may run the job again.
        timeout: Seconds the job may run (capped by the server's limit).
    """

    kind: JobKind
    function: str = ""
    args: Sequence[Any] = ()
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    payload: bytes = b""
    scheduler: str = ""
    result_format: str = "auto"
    name: str = ""
    request_id: str = ""
    retryable: bool = False
    timeout: float | None = None
    object_ids: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class WorkerSnapshot:
    """One worker as the scheduler last saw it."""

    address: str
    name: str
    nthreads: int
    memory_limit: int
    memory: int
    tasks_in_flight: int


@dataclasses.dataclass(frozen=True)
class ClusterSnapshot:
    """The cluster as the scheduler last described it."""

    scheduler_address: str
    dashboard_link: str
    worker_type: str  # "processes", "threads" or "" when unknown
    n_workers: int
    total_threads: int
    total_memory: int
    workers: tuple[WorkerSnapshot, ...]


@dataclasses.dataclass
class _Runtime:
    """What the core holds for a job besides its record."""

    done: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None
    scheduler: str = ""
    progress: Progress = dataclasses.field(default_factory=Progress)
    released: bool = False
    result: Any = _NO_RESULT
    cancel_reason: str = ""
    # While its result waits to be kept with the record: the value, if a
    # caller fetched it meanwhile (so it is not fetched from the cluster twice).
    keeping: bool = False
    fetched: Any = _NO_RESULT
    # Its caller waits for it and drops the result once answered (a Run with
    # release): the result is never kept with the record, nor published.
    answered_once: bool = False
    # Its result was published on the cluster for other replicas.
    published: bool = False
    # A Run's job on this server's own store, not started yet: its caller's
    # task runs it (see ComputeCore.run).
    start: Coroutine[Any, Any, None] | None = None
    # While a Run's job runs in its caller's task: the reason to cancel it
    # with when that caller goes away.
    caller_gone: Callable[[], str] | None = None

    def stop(self, reason: str) -> None:
        """Cancel the job's task, for ``reason`` (not its caller's leaving)."""
        if self.task is not None:
            self.cancel_reason = self.cancel_reason or reason
            self.task.cancel()


#: What :meth:`ComputeCore._within` returns for work cut off at its time limit.
_TIMED_OUT = object()

_IN_FLIGHT_STATES = ("executing", "ready", "waiting", "constrained", "fetch", "flight")


class ComputeCore:
    """Runs jobs on a Dask cluster; see the module docstring.

    Args:
        settings: The server's settings.
        registry: The named functions offered.
        job_table: Where job records live; defaults to memory.
    """

    def __init__(
        self, settings: Settings, registry: Registry, job_table: JobTable | None = None
    ) -> None:
        self.settings = settings
        self.registry = registry
        #: Changes on every start, so clients can tell that the server restarted.
        self.instance_id = new_job_id()
        self.jobs: JobTable = job_table if job_table is not None else self._make_table()
        self._runtimes: dict[str, _Runtime] = {}
        # Jobs with an idempotency key whose record is being written.
        self._inserting: dict[str, JobRecord] = {}
        # Jobs whose end is being written to a shared store.
        self._ending: set[str] = set()
        # With replicas: when this one last recorded a use of each object.
        self._object_uses: dict[tuple[str, str], float] = {}
        # Results being kept with their durable records.
        self._storing: set[asyncio.Task] = set()
        # WaitJobs callers: the event each set is woken by, under each job it waits for.
        self._batch_waiters: dict[str, set[asyncio.Event]] = {}
        self._cluster: Any = None
        self._client: Any = None
        self._executors: Executors | None = None
        self._snapshot: ClusterSnapshot | None = None
        self._background: list[asyncio.Task] = []
        self._draining = False
        self._closing = False
        #: Whether the Dask scheduler answers; the cluster watch keeps it current.
        self.cluster_ok = True
        #: Called with the new value of ``cluster_ok`` (the server points its health at it).
        self.on_cluster_health: Callable[[bool], Awaitable[None]] | None = None
        #: Objects uploaded by callers, held on the cluster.
        self.objects = objects.ObjectStore(settings.object_ttl, settings.max_object_bytes)
        #: Counters and gauges; the server exposes them on --metrics-port.
        self.metrics = Metrics(pending=lambda: self._pending, cluster=self._cluster_totals)
        self._by_request_id: dict[tuple[str, str], str] = {}
        self._tuned_workers: set[str] = set()
        self._pending = 0  # unfinished jobs, in all and by owner, for the limits
        self._pending_by_owner: dict[str, int] = {}

    # -- lifecycle ---------------------------------------------------------

    def _make_table(self) -> JobTable:
        url = self.settings.job_store_url
        if url == "memory":
            return MemoryJobTable()
        from server.store import SqlJobTable

        table = SqlJobTable(url, self.instance_id)
        logger.info("job records in %s", table.engine.url.render_as_string(hide_password=True))
        return table

    async def start(self) -> None:
        """Start (or connect to) the cluster, the client and the local pools."""
        from distributed import Client, LocalCluster

        s = self.settings
        if s.scheduler_address:
            logger.info("connecting to the Dask scheduler at %s", s.scheduler_address)
            self._client = await Client(
                s.scheduler_address, asynchronous=True, set_as_default=False
            )
        else:
            self._cluster = await LocalCluster(
                n_workers=s.n_workers,
                threads_per_worker=s.threads_per_worker,
                processes=s.processes,
                memory_limit=s.memory_limit,
                # With the dashboard off the scheduler still serves its HTTP
                # routes (health, metrics): on a free port, never 8787.
                dashboard_address=s.dashboard_address or ":0",
                scheduler_kwargs=None if s.dashboard_address else {"dashboard": False},
                asynchronous=True,
            )
            self._client = await Client(self._cluster, asynchronous=True, set_as_default=False)
        self._tune_client(self._client)
        self._executors = Executors(
            self._client,
            s.local_threads_count,
            s.local_processes_count,
            in_process_workers=self._cluster is not None and not s.processes,
            # Fetch results straight from our own workers; an external
            # cluster's may be unreachable from here (Dask would wait out a
            # connect timeout on each fetch before asking its scheduler).
            direct_gather=self._cluster is not None,
        )
        await self.cluster_info()
        await self._tune_local_cluster()
        await self._recover(self._executors)
        self._background = [
            asyncio.create_task(self._executors.warm_up(), name="warm-up"),
            asyncio.create_task(self._watch_cluster(), name="cluster-watch"),
            *(
                [asyncio.create_task(self._keep_lease(), name="replica-lease")]
                if self._shared
                else []
            ),
            asyncio.create_task(self._janitor(), name="janitor"),
        ]
        logger.info(
            "Dask cluster ready: %s, %d workers, %d threads",
            self._snapshot.scheduler_address,
            self._snapshot.n_workers,
            self._snapshot.total_threads,
        )

    async def _tune_local_cluster(self) -> None:
        """Shorten the batching intervals of the cluster this server owns.

        Dask batches scheduler-to-worker messages every 5 ms and worker-to-
        scheduler ones every 2 ms, which together dominate a trivial job's
        round trip. A LocalCluster is the server's own, so it trades a little
        batching for latency: 1 ms each way (messages within 1 ms still go
        together). An external cluster is left as its operator configured it.
        """
        if self._cluster is None:
            return
        scheduler = getattr(self._cluster, "scheduler", None)
        for comm in getattr(scheduler, "stream_comms", {}).values():
            if hasattr(comm, "interval"):
                comm.interval = 0.001
        workers = {w.address for w in self._snapshot.workers} if self._snapshot else set()
        if workers == self._tuned_workers:
            return

        def tune(dask_worker: Any) -> None:
            stream = getattr(dask_worker, "batched_stream", None)
            if stream is not None and hasattr(stream, "interval"):
                stream.interval = 0.001

        try:
            await asyncio.wait_for(self._client.run(tune), SCHEDULER_TIMEOUT)
            self._tuned_workers = workers
        except Exception as exc:  # a worker on its way out; the next look tries again
            logger.debug("could not tune workers: %s", exc)

    @staticmethod
    def _tune_client(client: Any) -> None:
        # A default Client batches its messages to the scheduler every 10 ms,
        # which dominates a trivial job's round trip. The service owns this
        # client and sends a steady stream of small updates, so it flushes
        # sooner; BatchedSend still coalesces whatever arrives within 1 ms.
        comm = getattr(client, "scheduler_comm", None)
        if comm is not None and hasattr(comm, "interval"):
            comm.interval = 0.001

    def drain(self) -> None:
        """Refuse new jobs (UNAVAILABLE) while running ones finish."""
        self._draining = True

    def _unfinished(self) -> list[asyncio.Task]:
        return [
            rt.task for rt in self._runtimes.values() if rt.task is not None and not rt.task.done()
        ]

    async def wait_idle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every running job to finish.

        Returns:
            Whether no job is left running.
        """
        pending = self._unfinished()
        if pending:
            logger.info("waiting up to %gs for %d running jobs", timeout, len(pending))
            await asyncio.wait(pending, timeout=timeout)
        return not self._unfinished()

    def cancel_all(self, reason: str) -> int:
        """Cancel every unfinished job with ``reason``; returns how many."""
        count = 0
        for job_id, runtime in list(self._runtimes.items()):
            if runtime.task is not None and not runtime.task.done():
                self._cancel(job_id, reason)
                count += 1
        if count:
            logger.warning("cancelled %d unfinished jobs: %s", count, reason)
        return count

    async def close(self) -> None:
        """Cancel unfinished jobs, then close the client, the cluster and the pools."""
        if self._closing:
            return
        self.cancel_all("the server shut down")
        self._closing = True
        self.objects.clear()
        pending = [rt.task for rt in self._runtimes.values() if rt.task is not None]
        for task in [*self._background, *self._storing]:
            task.cancel()
        await asyncio.gather(*pending, *self._background, *self._storing, return_exceptions=True)
        if self._shared:
            try:
                self.jobs.leave()  # no replica need wait out this one's lease
            except Exception as exc:
                logger.warning("could not leave the shared job store cleanly: %s", exc)
        self.jobs.close()  # writes what is still queued
        if self._client is not None:
            await self._client.close()
        if self._cluster is not None:
            if not self.settings.processes:
                # In-process workers would wait for abandoned tasks' threads
                # (a cancelled sleep(3600) included); don't.
                await asyncio.gather(
                    *(w.close(executor_wait=False) for w in self._cluster.workers.values()),
                    return_exceptions=True,
                )
            await self._cluster.close()
        if self._executors is not None:
            self._executors.close()
        logger.info("Dask client and cluster closed")

    @property
    def ready(self) -> bool:
        """Whether the core accepts jobs."""
        return self._executors is not None and not (self._draining or self._closing)

    def _check_ready(self) -> Executors:
        """The pools, if the core accepts new jobs."""
        if self._draining:
            raise Unavailable("the server is shutting down; retry against another instance")
        return self._pools()

    def _pools(self) -> Executors:
        """The pools, for work on behalf of jobs already accepted."""
        if self._closing:
            raise Unavailable("the server is shutting down; retry against another instance")
        if self._executors is None:
            raise Unavailable("the Dask cluster is still starting; retry shortly")
        return self._executors

    # -- cluster -------------------------------------------------------------

    async def cluster_info(self) -> ClusterSnapshot:
        """Ask the scheduler for a fresh description of the cluster.

        Raises:
            Unavailable: The scheduler cannot be reached.
        """
        if self._client is None:
            raise Unavailable("the Dask cluster is still starting; retry shortly")
        if not self.cluster_ok:
            raise Unavailable(self._outage_message())
        try:
            identity = await asyncio.wait_for(
                self._client.scheduler.identity(n_workers=-1), SCHEDULER_TIMEOUT
            )
        except (OSError, asyncio.TimeoutError) as exc:
            raise Unavailable(f"the Dask scheduler is unreachable: {exc or 'timed out'}") from exc
        self._snapshot = self._make_snapshot(identity)
        return self._snapshot

    def _cluster_totals(self) -> tuple[int, int, int] | None:
        snap = self._snapshot
        return None if snap is None else (snap.n_workers, snap.total_threads, snap.total_memory)

    def cluster_snapshot(self) -> ClusterSnapshot | None:
        """The cluster as last seen (at most a few seconds old), without asking."""
        return self._snapshot

    def _make_snapshot(self, identity: Mapping[str, Any]) -> ClusterSnapshot:
        workers = []
        for address, info in sorted(identity.get("workers", {}).items()):
            metrics = info.get("metrics", {})
            counts = metrics.get("task_counts", {}) or {}
            workers.append(
                WorkerSnapshot(
                    address=address,
                    name=str(info.get("name", "")),
                    nthreads=int(info.get("nthreads", 0)),
                    memory_limit=int(info.get("memory_limit") or 0),
                    memory=int(metrics.get("memory") or 0),
                    tasks_in_flight=sum(int(counts.get(s, 0)) for s in _IN_FLIGHT_STATES),
                )
            )
        if self._cluster is not None:
            worker_type = "processes" if self.settings.processes else "threads"
        elif workers:
            nannies = [w.get("nanny") for w in identity.get("workers", {}).values()]
            worker_type = "processes" if all(nannies) else "threads"
        else:
            worker_type = ""
        return ClusterSnapshot(
            scheduler_address=str(identity.get("address", "")),
            dashboard_link=self._dashboard_link(),
            worker_type=worker_type,
            n_workers=len(workers),
            total_threads=sum(w.nthreads for w in workers),
            total_memory=sum(w.memory_limit for w in workers),
            workers=tuple(workers),
        )

    def _dashboard_link(self) -> str:
        if self._cluster is not None and not self.settings.dashboard_address:
            return ""  # the scheduler's HTTP server runs, but without the dashboard
        try:
            return str(self._client.dashboard_link or "")
        except Exception:  # no dashboard: distributed raises rather than returning None
            return ""

    def _outage_message(self) -> str:
        address = self.settings.scheduler_address or "of the LocalCluster"
        return (
            f"the Dask scheduler {address} is unreachable; the service reconnects when it "
            "is back (jobs on the threads, processes and synchronous schedulers still run)"
        )

    async def _watch_cluster(self) -> None:
        """Refresh the snapshot; after two failed looks, declare the cluster lost and reconnect."""
        failures = 0
        while True:
            await asyncio.sleep(SNAPSHOT_INTERVAL)
            try:
                identity = await asyncio.wait_for(
                    self._client.scheduler.identity(n_workers=-1), SCHEDULER_TIMEOUT
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                logger.debug("cluster look failed (%d): %s", failures, exc)
                if failures >= 2 and self.cluster_ok:
                    await self._set_cluster_ok(False, f"{type(exc).__name__}: {exc}")
                if not self.cluster_ok and self.settings.scheduler_address:
                    await self._reconnect()
                continue
            failures = 0
            self._snapshot = self._make_snapshot(identity)
            await self._tune_local_cluster()
            if self._shared:
                try:
                    await self._sync_foreign_changes()
                except Exception as exc:
                    logger.warning("could not read the shared job store: %s", exc)
            if not self.cluster_ok:
                await self._set_cluster_ok(True, "")

    async def _set_cluster_ok(self, ok: bool, why: str) -> None:
        self.cluster_ok = ok
        if ok:
            logger.warning("the Dask scheduler is reachable again: serving")
        else:
            logger.error("lost the Dask scheduler (%s): health is NOT_SERVING", why)
            for job_id, runtime in list(self._runtimes.items()):
                if runtime.scheduler == "distributed" and runtime.task and not runtime.task.done():
                    message = "the connection to the Dask scheduler was lost while the job ran"
                    self._finish(
                        job_id,
                        JobState.FAILED,
                        error=JobError(type="SchedulerLost", message=message),
                    )
                    runtime.stop(message)
        if self.on_cluster_health is not None:
            await self.on_cluster_health(ok)

    async def _reconnect(self) -> None:
        from distributed import Client

        old = self._client
        try:
            client = await asyncio.wait_for(
                Client(self.settings.scheduler_address, asynchronous=True, set_as_default=False),
                SCHEDULER_TIMEOUT,
            )
        except Exception as exc:
            logger.debug("reconnect to %s failed: %s", self.settings.scheduler_address, exc)
            return
        self._tune_client(client)
        self._client = client
        if self._executors is not None:
            self._executors.client = client
        try:
            await asyncio.wait_for(old.close(), SCHEDULER_TIMEOUT)
        except Exception:  # the old connection is gone anyway
            pass
        logger.info("reconnected to the Dask scheduler at %s", self.settings.scheduler_address)

    def versions(self) -> dict[str, str]:
        """Versions of the software this server runs."""
        import cloudpickle
        import dask
        import distributed

        from server import __version__

        return {
            "python": platform.python_version(),
            "dask": dask.__version__,
            "distributed": distributed.__version__,
            "cloudpickle": cloudpickle.__version__,
            "service": __version__,
        }

    def schedulers(self) -> tuple[str, ...]:
        """The schedulers that jobs may name."""
        return SCHEDULERS

    def functions(self) -> list[FunctionSpec]:
        """The named functions, sorted by name."""
        return list(self.registry)

    # -- jobs ----------------------------------------------------------------

    async def submit(
        self,
        request: JobRequest,
        caller: Caller = ANONYMOUS,
        abandoned: Callable[[], str] | None = None,
        waited: bool = False,
    ) -> JobRecord:
        """Validate and accept a job, start it, and return its record.

        A request with a ``request_id`` that this caller used before returns
        the first job's record instead. ``abandoned`` and ``waited``: see
        :meth:`_accept`.

        Raises:
            InvalidArgument: Bad scheduler, format, arguments or payload.
            FunctionNotFound: No such named function.
            PermissionDenied: Pickled work from a caller without ``code``.
            Unavailable: The core is starting or stopping.
        """
        executors = self._check_ready()
        self._authorize(request, caller)
        existing = await self._existing(request, caller)
        if existing is not None:
            return existing
        self._check_limits(caller, 1)
        prepared = await self._validate(request, caller)
        # The same key may have landed here meanwhile.
        existing = await self._existing(request, caller, ask_store=False)
        if existing is not None:
            return existing
        self._check_limits(caller, 1)
        items = [(request, caller, *prepared)]
        (record,) = await self._accept(executors, items, abandoned, waited)
        return record

    async def submit_many(
        self, requests: Sequence[JobRequest], caller: Caller = ANONYMOUS
    ) -> list[JobRecord]:
        """Validate every job, then accept them all; nothing is accepted if one is invalid.

        Raises:
            InvalidArgument: A job is invalid (the message says which, by index),
                or the batch is empty or larger than :data:`MAX_BATCH`.
        """
        executors = self._check_ready()
        if not requests:
            raise InvalidArgument("jobs is empty: submit at least one job")
        if len(requests) > MAX_BATCH:
            raise InvalidArgument(f"at most {MAX_BATCH} jobs per batch, got {len(requests)}")
        # The keys unknown here, looked up in a durable store at once.
        stored: dict[str, JobRecord] = {}
        unknown = [
            r.request_id
            for r in requests
            if r.request_id and (caller.name, r.request_id) not in self._by_request_id
        ]
        if unknown and self.jobs.durable:
            stored = await self._ask_store(self.jobs.find_requests, caller.name, unknown)
        prepared: list[Any] = []
        for index, request in enumerate(requests):
            try:
                self._authorize(request, caller)
                existing = await self._existing(request, caller, ask_store=False)
                existing = existing or stored.get(request.request_id)
                prepared.append(
                    existing if existing is not None else await self._validate(request, caller)
                )
            except ServiceError as exc:
                raise type(exc)(f"jobs[{index}]: {exc}") from exc
        self._check_limits(caller, sum(not isinstance(p, JobRecord) for p in prepared))
        fresh = [
            (r, caller, *p)
            for r, p in zip(requests, prepared, strict=True)
            if not isinstance(p, JobRecord)
        ]
        accepted = iter(await self._accept(executors, fresh) if fresh else [])
        return [p if isinstance(p, JobRecord) else next(accepted) for p in prepared]

    @staticmethod
    def _authorize(request: JobRequest, caller: Caller) -> None:
        # Checked before anything is unpickled: loading a payload runs its code.
        if request.kind is JobKind.FUNCTION:
            if not caller.can("run"):
                raise PermissionDenied(f"caller {caller.name!r} lacks the 'run' permission")
        elif not caller.can("code"):
            raise PermissionDenied(
                f"caller {caller.name!r} may call named functions only: sending Python code "
                "(pickled callables, Dask graphs) needs the 'code' permission"
            )

    def _check_limits(self, caller: Caller, adding: int) -> None:
        s = self.settings
        if self._pending + adding > s.max_pending_jobs:
            raise ResourceExhausted(
                f"the server has {self._pending} unfinished jobs and takes at most "
                f"{s.max_pending_jobs} (max_pending_jobs); retry when some finish"
            )
        mine = self._pending_by_owner.get(caller.name, 0)
        if mine + adding > s.max_jobs_per_caller:
            raise ResourceExhausted(
                f"caller {caller.name!r} has {mine} unfinished jobs and may have at most "
                f"{s.max_jobs_per_caller} (max_jobs_per_caller); wait for some to finish"
            )

    async def _ask_store(self, read: Callable[..., Any], *args: Any) -> Any:
        """``read(*args)``, a read of the job store: in a driver thread when the
        store is shared (a database across the network), else here."""
        if self._shared:
            return await self._pools().in_thread(read, *args)
        return read(*args)

    async def _existing(
        self, request: JobRequest, caller: Caller, ask_store: bool = True
    ) -> JobRecord | None:
        """The job an earlier submission with this request's idempotency key made, if any.

        ``ask_store``: a key unknown here is looked up in a durable store too.
        """
        if not request.request_id:
            return None
        job_id = self._by_request_id.get((caller.name, request.request_id))
        if job_id is None:
            # A durable store remembers keys from before a restart (and, shared,
            # from other replicas); memory has nothing the map lacks.
            if not self.jobs.durable or not ask_store:
                return None
            return await self._ask_store(self.jobs.find_request, caller.name, request.request_id)
        writing = self._inserting.get(job_id)
        if writing is not None:
            return writing  # its first submission is being written now
        try:
            return self.jobs.get(job_id)
        except JobNotFound:  # expired: the key is free again
            self._by_request_id.pop((caller.name, request.request_id), None)
            return None

    async def _validate(
        self, request: JobRequest, caller: Caller = ANONYMOUS
    ) -> tuple[Work, str, str]:
        scheduler = request.scheduler or self.settings.default_scheduler
        if scheduler not in SCHEDULERS:
            raise InvalidArgument(
                f"unknown scheduler {scheduler!r}; use one of {', '.join(SCHEDULERS)}"
            )
        if request.result_format not in results.FORMATS:
            raise InvalidArgument(
                f"unknown result format {request.result_format!r}; "
                f"use one of {', '.join(results.FORMATS)}"
            )
        if len(request.name) > 256:
            raise InvalidArgument("job name must be at most 256 characters")
        if len(request.request_id) > 128:
            raise InvalidArgument("request_id must be at most 128 characters")
        if request.timeout is not None and request.timeout < 0:
            raise InvalidArgument("timeout must not be negative")
        if scheduler == "distributed" and not self.cluster_ok:
            raise Unavailable(self._outage_message())
        work, target = await self._prepare(request, caller, scheduler)
        return work, target, scheduler

    def _time_limit(self, request: JobRequest) -> float | None:
        limits = [t for t in (request.timeout, self.settings.max_job_seconds) if t]
        return min(limits) if limits else None

    async def _accept(
        self,
        executors: Executors,
        items: list[tuple[JobRequest, Caller, Work, str, str]],
        abandoned: Callable[[], str] | None = None,
        waited: bool = False,
    ) -> list[JobRecord]:
        """Record validated jobs (one write for the batch), then start them.

        ``abandoned`` gives the reason to cancel them with when the caller
        stops waiting before they are recorded (a ``Run`` whose caller left).

        A job is acknowledged only once its record is stored. While it is
        being written it already counts against the limits and its
        idempotency key answers a retry, so concurrent callers cannot slip
        past either. Except ``waited`` jobs, on a store of this server's
        own: their caller waits for their end (a ``Run``), and is told of it,
        or of the server's loss, so they start at once and their records are
        stored within :data:`WAITED_WRITE_DELAY` (a short job's just once,
        finished). With a shared store every record is stored first, so that
        other replicas see it.

        Raises:
            Unavailable: The job store could not record them (nothing started).
        """
        durable = self.jobs.durable
        entries = []
        for request, caller, _work, target, scheduler in items:
            record = JobRecord(
                job_id=new_job_id(),
                state=JobState.QUEUED,
                scheduler=scheduler,
                kind=request.kind,
                target=target,
                name=request.name,
                result_format=request.result_format,
                submit_time=time.time(),
                owner=caller.name,
                request_id=request.request_id,
                retryable=request.retryable,
            )
            # A retryable job's request is kept until it ends, to re-run it after a restart.
            entries.append(
                (record, _request_doc(request) if request.retryable and durable else None)
            )
            self._reserve(record)
        if waited and not self._shared:
            try:
                kept = self.jobs.insert_later(entries, WAITED_WRITE_DELAY)
            except Exception as exc:
                raise self._not_recorded(entries, exc) from exc
            self._launch(executors, kept, items, in_caller=True)
            return kept
        # Once written, the jobs start whatever happens to the caller meanwhile
        # (its RPC may be cancelled while the write is under way): a stored
        # job that never started would stay queued for ever.
        loop = asyncio.get_running_loop()
        started: asyncio.Future[list[JobRecord]] = loop.create_future()

        def start(written: asyncio.Future[list[JobRecord]]) -> None:
            error = written.exception()
            if error is not None:
                started.set_exception(self._not_recorded(entries, error))
                return
            stored = written.result()
            self._launch(executors, stored, items)
            started.set_result(stored)

        asyncio.wrap_future(self.jobs.insert_many(entries)).add_done_callback(start)
        try:
            return await asyncio.shield(started)
        except asyncio.CancelledError:
            if abandoned is not None:
                # Nobody will wait for these jobs: cancel them once they start.
                reason = abandoned()

                def cancel(done: asyncio.Future[list[JobRecord]]) -> None:
                    if not done.cancelled() and done.exception() is None:
                        for record in done.result():
                            self._cancel(record.job_id, reason)

                started.add_done_callback(cancel)
            raise

    def _not_recorded(
        self, entries: list[tuple[JobRecord, Any]], error: BaseException
    ) -> Unavailable:
        """Undo the reservations of jobs the store could not record; the error to answer."""
        for record, _ in entries:
            self._unreserve(record)
        return Unavailable(
            f"the job store could not record the job ({type(error).__name__}: {error}); "
            "nothing was started: retry"
        )

    def _launch(
        self,
        executors: Executors,
        records: list[JobRecord],
        items: list[tuple[JobRequest, Caller, Work, str, str]],
        in_caller: bool = False,
    ) -> None:
        """Start accepted (reserved) jobs (``in_caller``: see :meth:`_start`)."""
        for record, (request, _caller, work, _target, scheduler) in zip(
            records, items, strict=True
        ):
            limit = self._time_limit(request)
            self._start(executors, record, work, scheduler, limit, True, in_caller)
            self.metrics.job_submitted(record.kind.value, scheduler)

    def _reserve(self, record: JobRecord) -> None:
        """Count a job as unfinished, and make its idempotency key known."""
        if record.request_id:
            self._by_request_id[(record.owner, record.request_id)] = record.job_id
            self._inserting[record.job_id] = record
        self._pending += 1
        self._pending_by_owner[record.owner] = self._pending_by_owner.get(record.owner, 0) + 1

    def _unreserve(self, record: JobRecord) -> None:
        """Undo :meth:`_reserve` for a job that was not recorded after all."""
        self._inserting.pop(record.job_id, None)
        if self._by_request_id.get((record.owner, record.request_id)) == record.job_id:
            del self._by_request_id[(record.owner, record.request_id)]
        self._count_finished(record.owner)

    def _count_finished(self, owner: str) -> None:
        """One unfinished job of ``owner`` fewer, against the limits."""
        self._pending -= 1
        left = self._pending_by_owner.get(owner, 1) - 1
        if left > 0:
            self._pending_by_owner[owner] = left
        else:
            self._pending_by_owner.pop(owner, None)

    def _start(
        self,
        executors: Executors,
        record: JobRecord,
        work: Work,
        scheduler: str,
        time_limit: float | None,
        reserved: bool = False,
        in_caller: bool = False,
    ) -> None:
        """Start a job in a task of its own, or, ``in_caller``, leave it for
        :meth:`run` to run in its caller's task."""
        if reserved:
            self._inserting.pop(record.job_id, None)
        else:
            self._reserve(record)
            self._inserting.pop(record.job_id, None)
        runtime = self._runtimes[record.job_id] = _Runtime(scheduler=scheduler)
        job = self._run_job(executors, record.job_id, work, scheduler, record.target, time_limit)
        if in_caller:
            runtime.start = job
        else:
            runtime.task = asyncio.create_task(job)

    async def _recover(self, executors: Executors) -> None:
        """Settle the jobs a previous run of the service left unfinished.

        A retryable job whose request was kept runs again from the start under
        the same id; any other is marked failed with the reason "service
        restarted". With a shared store, other replicas' running jobs are not
        orphans: a dead replica's jobs are taken over when its lease runs out
        (see :meth:`_keep_lease`).
        """
        if self._shared:
            return
        orphans = self.jobs.unfinished()
        rerun = await self._settle_orphans(
            executors, orphans, "service restarted", "ServiceRestarted"
        )
        if orphans:
            logger.warning(
                "%d jobs were unfinished when the service last stopped: %d re-run, "
                "%d marked failed (service restarted)",
                len(orphans),
                rerun,
                len(orphans) - rerun,
            )

    async def _settle_orphans(
        self, executors: Executors, orphans: list[JobRecord], why: str, error_type: str
    ) -> int:
        """Re-run retryable orphaned jobs (under the same id); fail the others, saying ``why``.

        Returns:
            How many were re-run.
        """
        rerun = 0
        for record in orphans:
            doc = self.jobs.request_of(record.job_id) if record.retryable else None
            reason = why
            if doc is not None:
                try:
                    request = _request_from_doc(doc)
                    owner = Caller(record.owner, ANONYMOUS.permissions)
                    work, _, scheduler = await self._validate(request, owner)
                except Exception as exc:  # e.g. the function is no longer offered
                    reason = f"{why}, and the job could not be re-run: {exc}"
                else:
                    record = self.jobs.update(record.job_id, state=JobState.QUEUED, start_time=None)
                    if not record.state.finished:
                        self._start(executors, record, work, scheduler, self._time_limit(request))
                        rerun += 1
                    continue
            self.jobs.update(
                record.job_id,
                state=JobState.FAILED,
                finish_time=time.time(),
                error=JobError(type=error_type, message=reason),
            )
        return rerun

    async def _keep_lease(self) -> None:
        """With a shared store: renew this replica's lease, and take over dead replicas' jobs."""
        lease = self.settings.replica_lease
        while True:
            try:
                orphans = await asyncio.to_thread(self.jobs.adopt_orphans, lease, time.time())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("could not renew this replica's lease in the job store: %s", exc)
            else:
                if orphans and self._executors is not None:
                    why = f"its replica stopped answering for {lease:g}s"
                    await self._settle_orphans(self._executors, orphans, why, "ReplicaLost")
                    logger.warning(
                        "took over %d unfinished jobs of replicas unseen for %gs: %s",
                        len(orphans),
                        lease,
                        ", ".join(r.job_id for r in orphans),
                    )
            await asyncio.sleep(min(SNAPSHOT_INTERVAL, lease / 3))

    async def run(
        self,
        request: JobRequest,
        caller: Caller = ANONYMOUS,
        why_cancelled: Callable[[], str] = lambda: "the caller of Run went away",
        release: bool = False,
    ) -> JobRecord:
        """Submit a job and wait for it to finish.

        If the caller stops waiting (its RPC is cancelled or its deadline
        passes), the job is cancelled too, with ``why_cancelled()`` as the
        reason: nobody is left to read its result. ``release``: the caller
        frees the result once it has it, so it is not kept with the record.
        """
        record = await self.submit(request, caller, why_cancelled, waited=True)
        runtime = self._runtimes.get(record.job_id)
        if runtime is None:  # an earlier submission with this request_id, since forgotten
            return self.jobs.get(record.job_id)
        runtime.answered_once = release
        job, runtime.start = runtime.start, None
        if job is not None:
            await self._run_in_caller(runtime, job, why_cancelled)
            return self.jobs.get(record.job_id)
        try:
            await runtime.done.wait()
        except asyncio.CancelledError:
            self._cancel(record.job_id, why_cancelled())
            raise
        return self.jobs.get(record.job_id)

    @staticmethod
    async def _run_in_caller(
        runtime: _Runtime, job: Coroutine[Any, Any, None], why_cancelled: Callable[[], str]
    ) -> None:
        """Run a Run's job in its caller's task rather than a task of its own
        (one task and two turns of the event loop fewer per call).

        While it runs, the task is the job's: cancelling the job (CancelJob,
        a time limit, shutdown) cancels the task, the job ends, and the call
        goes on to answer. The caller's own cancellation (its RPC went away)
        cancels the job with ``why_cancelled()`` and propagates.
        """
        task = asyncio.current_task()
        runtime.task, runtime.caller_gone = task, why_cancelled
        try:
            await job
        finally:
            runtime.task = runtime.caller_gone = None
        uncancel = getattr(task, "uncancel", None)  # Python 3.11+
        if runtime.cancel_reason and uncancel is not None and task.cancelling():
            uncancel()  # the job's cancellation, handled: the call is not cancelled

    async def _prepare(
        self, request: JobRequest, caller: Caller, scheduler: str
    ) -> tuple[Work, str]:
        if request.kind is JobKind.FUNCTION:
            spec = self.registry.get(request.function)
            args, kwargs = spec.bind(request.args, request.kwargs)
            ids = objects.json_marker_ids([args, kwargs])
            if ids:
                held = await self._objects_for(caller, ids, scheduler)
                args = objects.replace_json_markers(args, held)
                kwargs = objects.replace_json_markers(kwargs, held)
            return Work(call=(spec.func, tuple(args), kwargs), lazy=spec.lazy), spec.name
        held = None
        if request.object_ids:
            ids = {objects.check_object_id(i) for i in request.object_ids}
            # A Dask graph was built around a placeholder: a cluster future put
            # there when it is loaded would not be a dependency of its tasks, so
            # graphs get the values (fetched from the cluster) on every scheduler.
            by_value = request.kind is JobKind.GRAPH
            held = await self._objects_for(caller, ids, "local" if by_value else scheduler)
        if request.kind is JobKind.PICKLED_CALL:
            func, args, kwargs = await self._load(_pickle.load_call, request.payload, held)
            return Work(call=(func, args, kwargs)), _pickle.describe_callable(func)
        if request.kind is JobKind.GRAPH:
            shape, obj, keys = await self._load(_pickle.load_graph, request.payload, held)
            if shape == "graph":
                return Work(graph=obj, keys=keys), "graph"
            if shape == "collection":
                return Work(collections=(obj,), single=True), "graph"
            return Work(collections=obj), "graph"
        raise InvalidArgument("the job carries no work: set call, pickled_call or graph")

    async def _objects_for(self, caller: Caller, ids: set[str], scheduler: str) -> dict[str, Any]:
        """What stands in for held objects in a job: the cluster's futures, or, for the
        local schedulers, the values themselves (fetched from the cluster)."""
        held = await self._held_objects(caller, ids)
        if scheduler == "distributed":
            return {object_id: stored.future for object_id, stored in held.items()}
        if not self.cluster_ok:
            raise Unavailable(self._outage_message())
        return {object_id: await stored.future for object_id, stored in held.items()}

    async def _load(self, loader: Any, payload: bytes, held: dict[str, Any] | None = None) -> Any:
        try:
            if len(payload) < INLINE_LOAD_LIMIT:
                return loader(payload, held)
            return await self._pools().in_thread(loader, payload, held)
        except (SystemExit, KeyboardInterrupt) as exc:  # loading ran the payload's sys.exit()
            raise InvalidArgument(
                f"cannot load the payload: it raised {type(exc).__name__}"
            ) from exc

    async def _run_job(
        self,
        executors: Executors,
        job_id: str,
        work: Work,
        scheduler: str,
        target: str,
        time_limit: float | None,
    ) -> None:
        # Written only if the job is still running a moment later: a short
        # job's end is its first write after it was accepted. (Other
        # replicas, which read the shared store, see it at once.)
        record = self.jobs.update_soon(
            job_id,
            delay=0.0 if self._shared else RUNNING_WRITE_DELAY,
            state=JobState.RUNNING,
            start_time=time.time(),
        )
        # A job starts as soon as it is accepted: one line says both.
        log_event(
            logger,
            "job=%s event=started kind=%s target=%s scheduler=%s owner=%s",
            job_id,
            record.kind.value,
            target,
            scheduler,
            record.owner,
        )
        try:
            runtime = self._runtimes[job_id]
            running = _contain_exits(
                executors.run(work, scheduler, _task_key(target, job_id), runtime.progress)
            )
            if time_limit is None:
                # Awaited in this task: cancelling the task cancels the work.
                value = await running
            else:
                value = await self._within(job_id, running, time_limit)
                if value is _TIMED_OUT:
                    return
        except asyncio.CancelledError:
            runtime = self._runtimes.get(job_id)
            reason = runtime.cancel_reason if runtime else ""
            if not reason and runtime is not None and runtime.caller_gone is not None:
                # Run in its caller's task, and that caller went away: the
                # cancellation is the caller's, and goes on up.
                self._finish(job_id, JobState.CANCELLED, cancel_reason=runtime.caller_gone())
                raise
            self._finish(job_id, JobState.CANCELLED, cancel_reason=reason or "cancelled")
            return
        except Exception as exc:
            self._finish(job_id, JobState.FAILED, error=_job_error(exc))
            return
        except BaseException as exc:  # not ours to stop: the job ends, and it goes on up
            self._finish(job_id, JobState.FAILED, error=_job_error(exc))
            raise
        await self._succeeded(executors, job_id, value)

    async def _within(self, job_id: str, running: Awaitable[Any], time_limit: float) -> Any:
        """``await running``, cancelled past ``time_limit`` seconds: then the job
        fails with a timeout reason, and this returns ``_TIMED_OUT``."""
        execution = asyncio.ensure_future(running)
        try:
            done, _ = await asyncio.wait({execution}, timeout=time_limit)
        except asyncio.CancelledError:
            execution.cancel()
            await asyncio.gather(execution, return_exceptions=True)
            raise
        if not done:
            execution.cancel()
            await asyncio.gather(execution, return_exceptions=True)
            message = f"the job ran past its time limit of {time_limit:g}s and was cancelled"
            self._finish(
                job_id, JobState.FAILED, error=JobError(type="TimeoutError", message=message)
            )
            return _TIMED_OUT
        return execution.result()

    async def _succeeded(self, executors: Executors, job_id: str, value: Any) -> None:
        """Hold a finished job's result and mark it succeeded (unless it ended meanwhile)."""
        runtime = self._runtimes.get(job_id)
        ended = self.jobs.get(job_id).state.finished or job_id in self._ending
        if runtime is not None and not ended:
            runtime.result = value
            if self._shared and isinstance(value, ClusterResult) and not runtime.answered_once:
                runtime.published = await self._publish(job_id, value)
            keep = self.jobs.durable and self.settings.stored_result_bytes
            keep = keep and not runtime.answered_once
            if keep and self._shared:
                # Shared with other replicas, which read small results from the
                # store: it must be there before the job is seen to succeed.
                try:
                    await self._store_result_now(executors, job_id, value)
                except Exception as exc:
                    logger.warning("job=%s result not stored with its record: %s", job_id, exc)
                keep = False
            self._finish(job_id, JobState.SUCCEEDED, result_available=True)
            if keep:
                runtime.keeping = True
                task = asyncio.create_task(self._store_small_result(executors, job_id, value))
                self._storing.add(task)
                task.add_done_callback(self._storing.discard)

    @property
    def _shared(self) -> bool:
        """Whether other replicas share the job store (and so may serve our results)."""
        return self.jobs.durable and not getattr(self.jobs, "exclusive", True)

    async def _publish(self, job_id: str, result: ClusterResult) -> bool:
        """Publish a result on the cluster as a Dask dataset, so any replica can fetch it.

        It stays there, held by the scheduler, until released or expired,
        even if this replica goes away. Returns whether it was published.
        """
        try:
            await asyncio.wait_for(
                self._client.publish_dataset(**{_dataset_name(job_id): result.published()}),
                SCHEDULER_TIMEOUT,
            )
        except Exception as exc:  # served from here only
            logger.warning("job=%s result not published for other replicas: %s", job_id, exc)
            return False
        return True

    async def _unpublish(self, job_ids: Iterable[str]) -> None:
        """Drop the published results of ``job_ids`` (those never published are skipped)."""
        if not self._shared or self._client is None:
            return
        try:
            names = [_dataset_name(job_id) for job_id in job_ids]
            if len(names) > 1:  # (expiry) those published, asked once
                published = set(
                    await asyncio.wait_for(self._client.list_datasets(), SCHEDULER_TIMEOUT)
                )
                names = [name for name in names if name in published]
            for name in names:  # the scheduler ignores a name it does not hold
                await self._client.unpublish_dataset(name)
        except Exception as exc:  # expiry comes round again
            logger.warning("could not drop published results: %s", exc)

    async def _published_result(self, job_id: str) -> ClusterResult | None:
        """The result another replica published for ``job_id``, if the cluster holds it."""
        if not self._shared or self._client is None or not self.cluster_ok:
            return None
        try:
            data = await asyncio.wait_for(
                self._client.get_dataset(_dataset_name(job_id)), SCHEDULER_TIMEOUT
            )
        except Exception:  # no such dataset (released, expired, or never published)
            return None
        return ClusterResult.from_published(data)

    async def _store_small_result(self, executors: Executors, job_id: str, value: Any) -> None:
        """Keep a small result with the durable record, so it outlives a restart.

        Done a moment after the job ends, off its path: a result released at
        once (a ``Run`` answered inline) is never fetched or written.
        """
        try:
            await asyncio.sleep(STORE_RESULT_DELAY)
            runtime = self._runtimes.get(job_id)
            if runtime is None or runtime.result is not value:
                return  # released or expired meanwhile
            await self._store_result_now(executors, job_id, value)
        except Exception as exc:  # the result is still served from the cluster
            logger.warning("job=%s result not stored with its record: %s", job_id, exc)
        finally:
            runtime = self._runtimes.get(job_id)
            if runtime is not None:
                runtime.keeping, runtime.fetched = False, _NO_RESULT

    async def _store_result_now(self, executors: Executors, job_id: str, handle: Any) -> None:
        value = handle
        if isinstance(handle, ClusterResult):
            runtime = self._runtimes.get(job_id)
            if runtime is not None and runtime.fetched is not _NO_RESULT:
                value = runtime.fetched  # a caller fetched it already
            elif await self._estimate_size(handle) > self.settings.stored_result_bytes:
                return
            else:
                value = await handle.fetch()
        try:
            if results.small_for_inline(value):
                blob = _pickle.dumps(value)
            else:
                blob = await executors.in_thread(_pickle.dumps, value)
        except Exception:  # unpicklable results are served from memory only
            logger.debug("result of job %s cannot be pickled; not stored", job_id)
            return
        runtime = self._runtimes.get(job_id)
        if len(blob) <= self.settings.stored_result_bytes and runtime and runtime.result is handle:
            stored = None
            if isinstance(handle, ClusterResult) and not self._shared:
                # Once the blob is committed the store serves the result and the
                # cluster lets it go, so a worker's death never re-runs a job
                # that already succeeded only to rebuild a result held for it.
                loop = asyncio.get_running_loop()

                def stored() -> None:
                    loop.call_soon_threadsafe(self._let_go, job_id, handle)

            self.jobs.store_result(job_id, blob, stored)  # unless released meanwhile

    def _let_go(self, job_id: str, handle: Any) -> None:
        """Drop the cluster's copy of a result now kept with its record."""
        runtime = self._runtimes.get(job_id)
        if runtime is not None and runtime.result is handle:
            runtime.result = _NO_RESULT

    def _finish(self, job_id: str, state: JobState, **changes: Any) -> JobRecord:
        """End a job (unless it ended already); returns its record as changed here.

        Those waiting for it are woken once its end is stored: at once on this
        server's own store (written with the next batch, off the event loop);
        on a shared store once the write is committed, also off the event
        loop, since another replica may have ended the job first (a cancel)
        and the stored record wins: until then the job reads as unfinished.
        """
        record = self.jobs.get(job_id)
        if record.state.finished or job_id in self._ending:
            return record
        now = time.time()
        if not self._shared:
            record = self.jobs.update_soon(job_id, state=state, finish_time=now, **changes)
            self._count_finished(record.owner)
            self._ended(job_id, record, now)
            return record
        record, stored = self.jobs.update_stored(job_id, state=state, finish_time=now, **changes)
        self._count_finished(record.owner)
        self._ending.add(job_id)
        loop = asyncio.get_running_loop()

        def written(outcome: concurrent.futures.Future[JobRecord]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
                loop.call_soon_threadsafe(self._ended_when_stored, job_id, record, outcome, now)

        stored.add_done_callback(written)
        return record

    def _ended_when_stored(
        self,
        job_id: str,
        record: JobRecord,
        outcome: concurrent.futures.Future[JobRecord],
        now: float,
    ) -> None:
        self._ending.discard(job_id)
        error = outcome.exception()
        if error is not None:
            logger.error("job=%s its end could not be stored: %s", job_id, error)
        else:
            stored = outcome.result()
            if stored.state is not record.state:
                logger.info("job=%s was %s by another replica first", job_id, stored.state.value)
            record = stored
        self._ended(job_id, record, now)

    def _ended(self, job_id: str, record: JobRecord, now: float) -> None:
        """Wake those waiting for a job that ended, and count and log its end."""
        runtime = self._runtimes.get(job_id)
        if runtime is not None:
            runtime.done.set()
        for waiter in self._batch_waiters.pop(job_id, ()):
            waiter.set()
        duration = None if record.start_time is None else now - record.start_time
        self.metrics.job_finished(record.state.value, record.scheduler, duration)
        log_event(
            logger,
            "job=%s event=finished state=%s scheduler=%s duration=%.6f%s",
            job_id,
            record.state.value,
            record.scheduler,
            duration or 0.0,
            f" error={record.error.type}" if record.error else "",
        )

    def _cancel(self, job_id: str, reason: str) -> JobRecord:
        runtime = self._runtimes.get(job_id)
        record = self._finish(job_id, JobState.CANCELLED, cancel_reason=reason)
        if runtime is not None:
            runtime.stop(reason)
        return record

    def get_job(self, job_id: str, caller: Caller = ANONYMOUS) -> JobRecord:
        """The record of ``job_id``, if ``caller`` may see it.

        Raises:
            JobNotFound: No such job, or another caller's (ids cannot be probed).
        """
        record = self.jobs.get(_check_job_id(job_id))
        if not caller.is_admin and record.owner != caller.name:
            raise JobNotFound(f"no job with id {job_id!r} (never accepted, or expired)")
        return record

    async def wait_job(
        self, job_id: str, timeout: float | None, caller: Caller = ANONYMOUS
    ) -> tuple[JobRecord, bool]:
        """Wait until the job finishes or ``timeout`` seconds pass.

        Returns:
            The record, and whether the wait timed out.
        """
        record = self.get_job(job_id, caller)
        if record.state.finished:
            return record, False
        runtime = self._runtimes.get(job_id)
        if runtime is None:
            return await self._wait_elsewhere(job_id, timeout)
        try:
            await asyncio.wait_for(runtime.done.wait(), timeout)
        except asyncio.TimeoutError:
            return self.jobs.get(job_id), True
        return self.jobs.get(job_id), False

    async def wait_jobs(
        self, job_ids: list[str], timeout: float | None, caller: Caller = ANONYMOUS
    ) -> tuple[list[JobRecord], bool]:
        """Wait until at least one of the jobs finishes or ``timeout`` seconds pass.

        Returns:
            The records of every job of ``job_ids`` finished by then, in the
            order asked, and whether the wait timed out with none finished.

        Raises:
            InvalidArgument: No ids, more than :data:`MAX_BATCH`, or one twice.
            JobNotFound: One of the jobs does not exist (its id is named).
        """
        if not job_ids or len(job_ids) > MAX_BATCH:
            raise InvalidArgument(f"WaitJobs takes 1 to {MAX_BATCH} job ids, got {len(job_ids)}")
        if len(set(job_ids)) != len(job_ids):
            raise InvalidArgument("WaitJobs got the same job id more than once")
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        records = [self.get_job(job_id, caller) for job_id in job_ids]
        wake = asyncio.Event()
        delay = 0.05
        while True:
            finished = [r for r in records if r.state.finished]
            if finished:
                return finished, False
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return [], True
            # Jobs of another replica are followed in the shared store, not woken.
            foreign = [r.job_id for r in records if r.job_id not in self._runtimes]
            if foreign and self.jobs.durable:
                remaining = delay if remaining is None else min(delay, remaining)
                delay = min(delay * 2, FOREIGN_POLL_INTERVAL)
            for record in records:
                self._batch_waiters.setdefault(record.job_id, set()).add(wake)
            try:
                await asyncio.wait_for(wake.wait(), remaining)
            except asyncio.TimeoutError:
                pass
            finally:
                for record in records:
                    waiters = self._batch_waiters.get(record.job_id)
                    if waiters is not None:
                        waiters.discard(wake)
                        if not waiters:
                            del self._batch_waiters[record.job_id]
            wake.clear()
            records = [
                self.jobs.refresh(r.job_id)
                if r.job_id not in self._runtimes
                else self.jobs.get(r.job_id)
                for r in records
            ]

    async def progress(self, job_id: str, caller: Caller = ANONYMOUS) -> tuple[int, int]:
        """``(tasks done, tasks in all)`` of a job; (0, 0) when not known.

        Jobs that run on another replica, or ran before a restart, report
        (1, 1) once finished and (0, 0) before.
        """
        record = self.get_job(job_id, caller)
        runtime = self._runtimes.get(job_id)
        if runtime is None:
            return (1, 1) if record.state is JobState.SUCCEEDED else (0, 0)
        progress = runtime.progress
        if progress.roots and not record.state.finished and self.cluster_ok:
            try:
                await asyncio.wait_for(
                    progress.refresh_from_scheduler(self._client), SCHEDULER_TIMEOUT
                )
            except Exception as exc:  # progress is advisory: keep the last counts
                logger.debug("progress of job %s unavailable: %s", job_id, exc)
        if record.state is JobState.SUCCEEDED and progress.total:
            return progress.total, progress.total
        return progress.done, progress.total

    async def _wait_elsewhere(self, job_id: str, timeout: float | None) -> tuple[JobRecord, bool]:
        """Wait for a job that another replica runs, by watching the shared store."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        delay = 0.05
        while True:
            record = self.jobs.refresh(job_id)
            if record.state.finished or not self.jobs.durable:
                return record, not record.state.finished
            if deadline is not None and loop.time() >= deadline:
                return record, True
            pause = delay if deadline is None else min(delay, max(0.0, deadline - loop.time()))
            await asyncio.sleep(pause)
            delay = min(delay * 2, FOREIGN_POLL_INTERVAL)

    async def cancel_job(
        self, job_id: str, reason: str = "", caller: Caller = ANONYMOUS
    ) -> tuple[JobRecord, bool]:
        """Cancel a queued or running job.

        Returns:
            The record after the cancel, and whether this call cancelled it.
        """
        record = self.get_job(job_id, caller)
        if record.state.finished:
            return record, False
        reason = reason or "cancelled by the caller"
        if job_id in self._runtimes:
            return self._cancel(job_id, reason), True
        # Another replica runs it: record the cancel in the shared store (that
        # replica sees it at its next look) and stop its task on the cluster now.
        _, stored = self.jobs.update_stored(
            job_id, state=JobState.CANCELLED, finish_time=time.time(), cancel_reason=reason
        )
        record = await asyncio.wrap_future(stored)
        if record.state is not JobState.CANCELLED or record.cancel_reason != reason:
            return record, False  # it finished first
        if record.scheduler == "distributed" and record.kind is not JobKind.GRAPH:
            await self._cancel_on_cluster(_task_key(record.target, job_id), reason)
        return record, True

    async def _cancel_on_cluster(self, key: str, reason: str) -> None:
        from distributed import Future

        try:
            future = Future(key, self._client)
            await self._client.cancel([future], force=True, reason=reason)
        except Exception as exc:  # the owning replica cancels it at its next look anyway
            logger.warning("could not cancel task %s on the cluster: %s", key, exc)

    async def _sync_foreign_changes(self) -> None:
        """Notice jobs of ours that another replica cancelled in the shared store."""
        mine = [job_id for job_id, rt in self._runtimes.items() if rt.task and not rt.task.done()]
        if not mine or not self.jobs.durable:
            return
        for job_id, state in self.jobs.states_of(mine).items():
            if state.finished:
                record = self._finish(job_id, state)
                runtime = self._runtimes.get(job_id)
                if runtime is not None:
                    runtime.stop(record.cancel_reason or f"{state.value} through another replica")
                logger.info("job %s was %s through another replica", job_id, state.value)

    def list_jobs(
        self,
        states: Collection[JobState] = (),
        page_size: int = 0,
        page_token: str = "",
        caller: Caller = ANONYMOUS,
    ) -> tuple[list[JobRecord], str]:
        """A page of the job records ``caller`` may see, newest first, and the next page's token."""
        owner = None if caller.is_admin else caller.name
        return self.jobs.list(states, page_size, page_token, owner=owner)

    async def result(
        self, job_id: str, fmt: str = "auto", caller: Caller = ANONYMOUS
    ) -> results.EncodedResult:
        """The result of a succeeded job, encoded as ``fmt``.

        Raises:
            FailedPrecondition: The job has not succeeded, or JSON was asked
                for a result that has no JSON form.
            NotFound: The result expired.
        """
        record, handle = await self._result_handle(job_id, caller)
        estimate = await self._estimate_size(handle)
        if estimate > self.settings.inline_result_bytes:
            return results.EncodedResult("auto", size_bytes=estimate, streamed=True)
        value = await handle.fetch() if isinstance(handle, ClusterResult) else handle
        self._lend(job_id, handle, value)
        return await self._encode_inline(record, value, fmt)

    def _lend(self, job_id: str, handle: Any, value: Any) -> None:
        """Hand a fetched result to its job's pending store, which then need not fetch it."""
        runtime = self._runtimes.get(job_id)
        if runtime is not None and runtime.keeping and runtime.result is handle:
            runtime.fetched = value

    async def results(
        self, job_ids: list[str], fmt: str = "auto", caller: Caller = ANONYMOUS
    ) -> list[results.EncodedResult | None]:
        """The results of many succeeded jobs, as :meth:`result` gives each.

        Results held on the cluster are fetched in one ``gather``, as Dask's
        own client does for many futures. A result that is gone (released or
        expired) is ``None`` rather than an error for the whole batch.
        """
        handles: list[tuple[JobRecord, Any] | None] = []
        for job_id in job_ids:
            try:
                handles.append(await self._result_handle(job_id, caller))
            except NotFound:
                handles.append(None)
        held = [h for h in handles if h is not None and isinstance(h[1], ClusterResult)]
        sizes = await self._estimate_sizes([handle for _, handle in held])
        small = [
            h
            for h, size in zip(held, sizes, strict=True)
            if size <= self.settings.inline_result_bytes
        ]
        big = {
            id(h): size
            for h, size in zip(held, sizes, strict=True)
            if size > self.settings.inline_result_bytes
        }
        try:
            fetched = await fetch_many([handle for _, handle in small])
        except Exception:  # one lost result: fetch each alone, so the others still come
            fetched = [await handle.fetch() for _, handle in small]
        values = {id(h): value for h, value in zip(small, fetched, strict=True)}
        for (record, handle), value in zip(small, fetched, strict=True):
            self._lend(record.job_id, handle, value)
        encoded: list[results.EncodedResult | None] = []
        for entry in handles:
            if entry is None:
                encoded.append(None)
            elif id(entry) in big:
                encoded.append(
                    results.EncodedResult("auto", size_bytes=big[id(entry)], streamed=True)
                )
            elif id(entry) in values:
                encoded.append(await self._encode_inline(entry[0], values[id(entry)], fmt))
            else:
                encoded.append(await self.result(entry[0].job_id, fmt, caller))
        return encoded

    async def _encode_inline(
        self, record: JobRecord, value: Any, fmt: str
    ) -> results.EncodedResult:
        """``value`` encoded for an answer, or a pointer to GetJobResult when too large."""
        if fmt == "auto":
            fmt = record.result_format
        is_function = record.kind is JobKind.FUNCTION
        limit = self.settings.inline_result_bytes
        if results.small_for_inline(value):
            encoded = results.encode(value, fmt, is_function)
        else:
            encoded = await self._pools().in_thread(results.encode, value, fmt, is_function)
        if encoded.size_bytes > limit:
            return results.EncodedResult(
                encoded.format, size_bytes=encoded.size_bytes, streamed=True
            )
        return encoded

    async def _result_handle(self, job_id: str, caller: Caller) -> tuple[JobRecord, Any]:
        """The record and the result (a value, or a :class:`ClusterResult`) of a succeeded job."""
        record = self.get_job(job_id, caller)
        if record.state is not JobState.SUCCEEDED:
            raise FailedPrecondition(
                f"job {job_id} is {record.state.value}; only succeeded jobs have a result"
            )
        runtime = self._runtimes.get(job_id)
        handle = runtime.result if runtime is not None else _NO_RESULT
        if handle is not _NO_RESULT and self._shared:
            # Another replica may have released it: the shared record says.
            record = await self._ask_store(self.jobs.refresh, job_id)
            if not record.result_available:
                runtime.result, runtime.released, handle = _NO_RESULT, True, _NO_RESULT
        if handle is _NO_RESULT and record.result_available:
            # From before a restart, or another replica's.
            blob = await self._pools().in_thread(self.jobs.stored_result, job_id)
            if blob is not None:
                handle = await self._pools().in_thread(_pickle.load_payload, blob, "stored result")
            else:  # another replica's result, too large to store, published on the cluster
                published = await self._published_result(job_id)
                if published is not None:
                    handle = published
        if handle is _NO_RESULT:
            if runtime is not None and runtime.released:
                raise NotFound(f"the result of job {job_id} was released by ReleaseJob")
            raise NotFound(
                f"the result of job {job_id} is gone: results are kept for "
                f"{self.settings.result_ttl:g}s after a job finishes"
            )
        return record, handle

    async def _estimate_sizes(self, handles: list[ClusterResult]) -> list[int]:
        """Sizes of results held on the cluster, with one question to the scheduler."""
        try:
            return await asyncio.wait_for(nbytes_many(handles), SCHEDULER_TIMEOUT)
        except Exception:  # no estimate: encode them and see
            return [0] * len(handles)

    async def _estimate_size(self, handle: Any) -> int:
        if isinstance(handle, ClusterResult):
            try:
                return await asyncio.wait_for(handle.nbytes(), SCHEDULER_TIMEOUT)
            except Exception:  # no estimate: encode it and see
                return 0
        if results.small_for_inline(handle):
            return 0
        return await self._pools().in_thread(sizeof, handle)

    async def open_result(
        self,
        job_id: str,
        fmt: str = "auto",
        caller: Caller = ANONYMOUS,
        checksum: bool = True,
    ) -> results.ResultStream | worker_stream.WorkerStream:
        """A succeeded job's result, encoded for streaming.

        A pickle held on the cluster by one future is encoded and hashed by
        the worker that holds it, and read from there as it is sent (a
        :class:`server.worker_stream.WorkerStream`). Otherwise the value is
        fetched from the cluster (where it stays until released or expired),
        encoded off the event loop, and held only by the stream. Without
        ``checksum`` the stream's ``sha256`` is left empty, for the caller to
        get with the stream's ``digest()`` while it sends.
        """
        record, handle = await self._result_handle(job_id, caller)
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
        return await self._pools().in_thread(
            results.encode_stream, value, fmt, is_function, checksum
        )

    # -- objects ---------------------------------------------------------------

    async def put_object(
        self,
        caller: Caller,
        sha256: str,
        size: int,
        segment_sizes: Sequence[int],
        chunks: AsyncIterator[bytes],
    ) -> tuple[objects.StoredObject, bool]:
        """Take an upload, check it, load it on the cluster and hold it.

        With replicas (a shared job store) the object is also published on the
        cluster for them (see :meth:`_keep_object`), and one that another
        replica published counts as held (see :meth:`_held_objects`).

        Returns:
            The held object, and whether it was held already (then the bytes
            are not read).

        Raises:
            PermissionDenied: The caller lacks ``code`` (loading pickled data runs code).
            InvalidArgument: A bad header, a cut-off upload or a hash mismatch:
                nothing is kept.
            InvalidPayload: The bytes could not be loaded.
            ResourceExhausted: Larger than ``max_object_bytes``.
            Unavailable: The cluster does not answer, or (with replicas) the
                object could not be published: nothing is kept.
        """
        if not caller.can("code"):
            raise PermissionDenied(
                f"caller {caller.name!r} may not upload objects: loading them runs pickled code, "
                "which needs the 'code' permission"
            )
        self._check_ready()
        object_id = objects.check_object_id(f"sha256:{sha256}")
        self.objects.check_upload(size)
        existing = await self._existing_object(caller, object_id)
        if existing is not None:
            return existing, True
        if not self.cluster_ok:
            raise Unavailable(self._outage_message())
        data = await objects.receive(chunks, size, segment_sizes, sha256)
        client = self._client
        # The bytearray as is (Dask sends it without a copy), straight to a
        # worker of our own cluster: through its scheduler, in this process,
        # the bytes would be held here once more.
        raw = None
        if self._cluster is not None:
            try:
                raw = await asyncio.wait_for(
                    client.scatter(data, hash=False, direct=True), DIRECT_GATHER_TIMEOUT
                )
            except asyncio.TimeoutError:
                logger.warning("a direct scatter stalled; scattering through the scheduler")
        if raw is None:
            raw = await client.scatter(data, hash=False)
        del data
        future = client.submit(
            objects.load_on_worker(),
            raw,
            list(segment_sizes),
            pure=False,
            key=f"object-{sha256[:16]}-{new_job_id()[:8]}",
        )
        error = await future.exception()
        del raw
        if future.status != "finished":
            raise objects.not_loadable(object_id, error or RuntimeError(future.status))
        stored = await self._keep_object(caller, object_id, size, future)
        logger.info("object=%s event=stored size=%d owner=%s", object_id, size, caller.name)
        return stored, False

    async def _keep_object(
        self, caller: Caller, object_id: str, size: int, future: Any
    ) -> objects.StoredObject:
        """Hold a freshly loaded object; with replicas, publish it on the cluster first.

        It is published (as :func:`server.objects.dataset_name`, holding its
        future and size) before it is held here, so every copy a replica holds
        has had its dataset. If another replica published the same object of
        the same caller meanwhile, that one is adopted and this one let go.

        Raises:
            Unavailable: It could not be published: nothing is kept here.
        """
        if not self._shared:
            return self.objects.add(caller.name, object_id, size, future)
        name = objects.dataset_name(caller.name, object_id)
        try:
            await asyncio.wait_for(
                self._client.publish_dataset(**{name: {"future": future, "size": size}}),
                SCHEDULER_TIMEOUT,
            )
        except KeyError:  # uploaded through another replica at the same time
            return (await self._held_objects(caller, [object_id]))[object_id]
        except Exception as exc:
            raise Unavailable(
                f"object {object_id} was loaded but could not be published for the other "
                f"replicas ({type(exc).__name__}: {exc}); nothing was kept, upload it again"
            ) from exc
        self._used_objects(caller.name, [object_id], force=True)
        return self.objects.add(caller.name, object_id, size, future)

    async def _existing_object(self, caller: Caller, object_id: str) -> objects.StoredObject | None:
        """The object if held (with replicas: by any of them), else ``None``."""
        try:
            return (await self._held_objects(caller, [object_id]))[object_id]
        except NotFound:
            return None

    async def _held_objects(
        self, caller: Caller, ids: Iterable[str]
    ) -> dict[str, objects.StoredObject]:
        """The caller's objects ``ids``, each marked as used now.

        Alone (a job store no other replica shares) these are the objects
        this server holds. With replicas the rule is: **an object exists
        while its dataset is published on the cluster**, and every use asks.
        The scheduler is asked about all of ``ids`` at once: a copy held
        here whose dataset is gone (deleted through any replica, or unused
        through all of them for ``object_ttl``) is dropped and not served; a
        published object not held here is adopted (held here from then on,
        see :class:`server.objects.StoredObject`). So no replica serves an
        object deleted through another once the deletion has answered. Each
        use is recorded in the shared store, where any replica's janitor sees
        how long an object has gone unused through all of them.

        Raises:
            InvalidArgument: An id is malformed.
            NotFound: One is not held (the first, by id, is named).
            Unavailable: With replicas, the scheduler does not answer, so
                whether the objects still exist is not known.
        """
        owner = caller.name
        wanted = sorted({objects.check_object_id(object_id) for object_id in ids})
        if not self._shared:
            return {object_id: self.objects.get(owner, object_id) for object_id in wanted}
        if self._client is None or not self.cluster_ok:
            raise Unavailable(self._outage_message())
        names = [objects.dataset_name(owner, object_id) for object_id in wanted]
        client = self._client
        try:
            # One name per call: older distributed versions take no list of names.
            published = await asyncio.wait_for(
                asyncio.gather(*(client.get_dataset(name, default=None) for name in names)),
                SCHEDULER_TIMEOUT,
            )
        except Exception as exc:
            raise Unavailable(
                f"could not ask the Dask scheduler whether the objects still exist "
                f"({type(exc).__name__}: {exc}); retry"
            ) from exc
        held = {}
        for object_id, data in zip(wanted, published, strict=True):
            copy = self.objects.has(owner, object_id)
            if data is None:
                if copy is not None and self.objects.drop(copy):
                    logger.info("object=%s event=gone owner=%s", object_id, owner)
                raise self.objects.not_found(object_id)
            if copy is None:
                copy = self.objects.add(
                    owner, object_id, data["size"], data["future"], adopted=True
                )
                logger.info("object=%s event=adopted owner=%s", object_id, owner)
            held[object_id] = copy
        self._used_objects(owner, wanted)
        return held

    def _used_objects(self, owner: str, ids: Iterable[str], force: bool = False) -> None:
        """With replicas, record in the shared store that ``owner``'s objects ``ids``
        were used now: at most once per object every tenth of ``object_ttl``
        from this replica (or at once, ``force``), off the event loop."""
        now = time.time()
        every = self.objects.ttl / 10
        due = [
            object_id
            for object_id in ids
            if force or now - self._object_uses.get((owner, object_id), 0.0) >= every
        ]
        for object_id in due:
            self._object_uses[(owner, object_id)] = now
        if due:
            self.jobs.use_objects([(owner, object_id) for object_id in due], now)

    async def get_object(self, object_id: str, caller: Caller = ANONYMOUS) -> objects.StoredObject:
        """A held object of ``caller``'s (with replicas: see :meth:`_held_objects`).

        Raises:
            InvalidArgument: A malformed id.
            NotFound: Not held.
            Unavailable: With replicas, the scheduler does not answer.
        """
        return (await self._held_objects(caller, [object_id]))[object_id]

    async def delete_object(self, object_id: str, caller: Caller = ANONYMOUS) -> bool:
        """Free an object; returns whether it was held (with replicas: by any of them).

        With replicas its dataset is unpublished before this returns, so every
        replica finds it gone at its next use (see :meth:`_held_objects`); a
        copy another replica holds is freed then, or at that replica's next
        sweep (:meth:`_sweep_objects`).

        Raises:
            InvalidArgument: A malformed id.
            Unavailable: With replicas, the scheduler does not answer: the
                object may still be published, so delete it again.
        """
        held = self.objects.delete(caller.name, object_id)
        if not self._shared:
            return held
        if self._client is None or not self.cluster_ok:
            raise Unavailable(self._outage_message())
        name = objects.dataset_name(caller.name, object_id)
        try:
            published = await asyncio.wait_for(
                self._client.get_dataset(name, default=None), SCHEDULER_TIMEOUT
            )
            if published is not None:
                await asyncio.wait_for(self._client.unpublish_dataset(name), SCHEDULER_TIMEOUT)
        except Exception as exc:
            raise Unavailable(
                f"object {object_id} could not be unpublished for the other replicas "
                f"({type(exc).__name__}: {exc}); delete it again"
            ) from exc
        self.jobs.forget_object(caller.name, object_id)
        self._object_uses.pop((caller.name, object_id), None)
        return held or published is not None

    async def _sweep_objects(self, now: float) -> None:
        """With replicas, on each janitor round: unpublish the objects unused for
        ``object_ttl`` through every replica, whichever uploaded them (the
        shared store records each use; each such object is taken by one
        replica's janitor), and drop the copies held here whose dataset is
        gone, so their memory on the cluster is freed even if nobody names
        them again. An object that could not be unpublished is taken again at
        the next round.
        """
        if self._client is None or not self.cluster_ok:
            return
        ttl = self.objects.ttl
        try:
            stale = await self._ask_store(self.jobs.take_unused_objects, now - ttl)
        except Exception as exc:  # the next round looks again
            logger.warning("could not look for objects unused through every replica: %s", exc)
            stale = []
        try:
            if stale:
                names = [objects.dataset_name(*key) for key in stale]
                try:
                    await asyncio.wait_for(self._client.unpublish_dataset(names), SCHEDULER_TIMEOUT)
                except BaseException:
                    self.jobs.use_objects(stale, now - ttl - 1)  # still due: the next round
                    raise
                logger.info(
                    "unpublished %d objects unused for %gs through every replica", len(stale), ttl
                )
            copies = self.objects.held()
            if not copies:
                return
            published = set(await asyncio.wait_for(self._client.list_datasets(), SCHEDULER_TIMEOUT))
        except OSError as exc:  # a timeout or a lost connection: the next round tries again
            logger.warning("could not check the objects published for other replicas: %s", exc)
            return
        gone = [c for c in copies if objects.dataset_name(c.owner, c.object_id) not in published]
        dropped = sum(self.objects.drop(copy) for copy in gone)
        if dropped:
            logger.info("dropped %d objects deleted or expired through other replicas", dropped)

    async def release(self, job_id: str, caller: Caller = ANONYMOUS) -> tuple[JobRecord, bool]:
        """Free a finished job's result now (on the cluster too); returns whether there was one."""
        record = self.get_job(job_id, caller)
        runtime = self._runtimes.get(job_id)
        had = record.result_available
        if runtime is not None:
            had = had or runtime.result is not _NO_RESULT
            runtime.result = _NO_RESULT
            runtime.released = True
        if record.result_available:
            if self._shared:  # other replicas must see it gone once this answers
                self.jobs.store_result(job_id, None)
                _, stored = self.jobs.update_stored(job_id, result_available=False)
                record = await asyncio.wrap_future(stored)
            else:
                record = self.jobs.update_soon(job_id, result_available=False)
                self.jobs.store_result(job_id, None)
        if runtime is None or runtime.published:  # (a job of this replica's says whether)
            await self._unpublish([job_id])
        return record, had

    async def _janitor(self) -> None:
        # Often enough that an object outlives its last use by about its ttl.
        interval = min(JANITOR_INTERVAL, max(1.0, self.settings.object_ttl / 2))
        while True:
            await asyncio.sleep(interval)
            self.expire(time.time())

    def expire(self, now: float) -> None:
        """Drop objects unused for ``object_ttl`` (with replicas, see
        :meth:`_sweep_objects`), results older than ``result_ttl`` and records
        older than ``job_ttl``."""
        s = self.settings
        dropped = self.objects.expire(now)
        if dropped:
            logger.info("expired %d objects unused for %gs", len(dropped), s.object_ttl)
        if self._shared:  # (the copies held here only: the cluster's go by the shared uses)
            self._object_uses = {
                k: t for k, t in self._object_uses.items() if t >= now - s.object_ttl
            }
            task = asyncio.get_running_loop().create_task(self._sweep_objects(now))
            self._storing.add(task)
            task.add_done_callback(self._storing.discard)
        expired = self.jobs.expire_results(now - s.result_ttl)
        for job_id in expired:
            runtime = self._runtimes.get(job_id)
            if runtime is not None:
                runtime.result = _NO_RESULT
        if expired and self._shared:
            task = asyncio.get_running_loop().create_task(self._unpublish(expired))
            self._storing.add(task)
            task.add_done_callback(self._storing.discard)
        old = set(self.jobs.finished_before(now - s.job_ttl))
        excess = len(self.jobs) - s.max_jobs
        if excess > 0:
            old.update(self.jobs.oldest_finished(excess))
        if old:
            self.jobs.delete(old)
            for job_id in old:
                self._runtimes.pop(job_id, None)
            self._by_request_id = {
                key: job_id for key, job_id in self._by_request_id.items() if job_id not in old
            }
            logger.info("expired %d finished job records", len(old))


def _dataset_name(job_id: str) -> str:
    """The name of a job's result published on the cluster for other replicas."""
    return f"dask-compute-result-{job_id}"


def _task_key(target: str, job_id: str) -> str:
    """The key of a job's task on the cluster (every replica derives the same one)."""
    return f"{target}-{job_id}"


def _request_doc(request: JobRequest) -> dict[str, Any]:
    """A JSON-safe form of a request, to store with a retryable job."""
    doc = dataclasses.asdict(request)
    doc["kind"] = request.kind.value
    doc["payload"] = base64.b64encode(request.payload).decode("ascii")
    doc["args"] = list(request.args)
    doc["kwargs"] = dict(request.kwargs)
    return doc


def _request_from_doc(doc: dict[str, Any]) -> JobRequest:
    values = dict(doc)
    values["kind"] = JobKind(values["kind"])
    values["payload"] = base64.b64decode(values["payload"])
    return JobRequest(**values)


async def _contain_exits(work: Any) -> Any:
    """Await ``work``, turning SystemExit or KeyboardInterrupt from a job's code into RuntimeError.

    Raised in a pool thread or process they reach this task through a future;
    escaping the task they would stop the event loop, and the server with it.
    """
    try:
        return await work
    except (SystemExit, KeyboardInterrupt) as exc:
        raise RuntimeError(
            f"the job raised {type(exc).__name__}{exc.args!r}, reported as this error "
            "instead of stopping the server"
        ) from exc


def _check_job_id(job_id: str) -> str:
    if not job_id:
        raise InvalidArgument("job_id is required")
    if len(job_id) > 128 or not job_id.isascii() or not job_id.isprintable():
        raise NotFound(f"no job with id {job_id[:64]!r}")
    return job_id


def _job_error(exc: BaseException) -> JobError:
    traceback_text = getattr(exc, "__dask_compute_traceback__", None) or _pickle.format_traceback(
        exc
    )
    return JobError(
        type=_pickle.exception_type_name(exc),
        message=str(exc),
        traceback=traceback_text,
        pickled_exception=_pickle.dump_exception(exc),
    )
