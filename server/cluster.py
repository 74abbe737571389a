"""The Dask cluster the service runs on, and the one client that talks to it.

:class:`Cluster` owns the :class:`distributed.LocalCluster` it starts (or the
connection to an operator's scheduler), the long-lived asynchronous
:class:`distributed.Client`, the latency tuning of both, the cached snapshot
that every ``Run`` answer carries, and the watch that declares the scheduler
lost, reconnects to it and declares it back. It knows nothing of jobs: what
happens to running jobs when the scheduler is lost, and after each look, is
told to it as callbacks.

What the LocalCluster listens on: its scheduler, workers and nannies speak
Dask's unauthenticated protocol (which runs pickles), so they always bind
loopback (:data:`CLUSTER_HOST`), whatever ``--host`` is; the service is the
only way in. The dashboard follows ``--host`` unless ``--dashboard-address``
names a host itself (see :func:`dashboard_address`); with the dashboard off,
the scheduler's remaining HTTP routes bind loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from server.auth import is_loopback
from server.config import Settings
from server.dask_clock import WORKER_PRELOAD  # (switches this process to the monotonic clock)
from server.errors import Unavailable, cluster_starting

logger = logging.getLogger(__name__)

#: How often the cached cluster snapshot (sent with each Run) is refreshed, in seconds.
SNAPSHOT_INTERVAL = 2.0
#: How long a look at the scheduler may take before it counts as a failure, in seconds.
SCHEDULER_TIMEOUT = 5.0

#: Dask's own monitoring, slowed down for a LocalCluster the server owns. Its
#: scheduler and nannies run on this process's event loop, beside every RPC:
#: each nanny's memory monitor (a psutil read of its worker, every 100 ms),
#: the scheduler's system monitor (CPU, memory, disk and network counters,
#: every 500 ms) and the loop's 20 ms tick took about a seventh of the loop
#: under load. Set as defaults (``dask.config.update_defaults``): an
#: operator's own Dask configuration of these keys wins. The workers get them
#: from their nannies.
MONITORING_DEFAULTS: dict[str, Any] = {
    "distributed": {
        "worker": {"memory": {"monitor-interval": "250ms"}},
        "admin": {
            "system-monitor": {"interval": "2s", "disk": False},
            "tick": {"interval": "100ms"},
        },
    }
}

#: Where the LocalCluster's scheduler, workers, nannies and their HTTP routes listen.
CLUSTER_HOST = "127.0.0.1"

_IN_FLIGHT_STATES = ("executing", "ready", "waiting", "constrained", "fetch", "flight")


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
    #: The size the server keeps its own LocalCluster at (0: an existing cluster).
    n_workers_wanted: int = 0


class Cluster:
    """The cluster and its client; see the module docstring.

    Args:
        settings: The server's settings (cluster size, or ``scheduler_address``).

    Attributes:
        client: The asynchronous Dask client (``None`` until :meth:`start`).
        ok: Whether the scheduler answers; :meth:`watch` keeps it current.
        on_health: Awaited with the new value of ``ok`` (the server points its
            health service at it).
        on_lost: Called when the scheduler is declared lost (the runner fails
            the jobs running on it).
        on_client: Called with a new client after a reconnect.
        on_size: Awaited with whether the server's own cluster has all its
            workers, as that changes (the server's health service).
        full: Whether the last look found it so; ``restorations``: how many
            workers Dask gave up on were started again.
        on_look: Awaited after each successful look (replicas read the shared
            store there).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client: Any = None
        self.local: Any = None  # the LocalCluster this server started, if any
        self.ok = True
        self.snapshot: ClusterSnapshot | None = None
        self.on_health: Callable[[bool], Awaitable[None]] | None = None
        self.on_size: Callable[[bool], Awaitable[None]] | None = None
        #: Whether the last look found the cluster at its size; workers started again.
        self.full = True
        self.restorations = 0
        self.on_lost: Callable[[], None] = lambda: None
        self.on_client: Callable[[Any], None] = lambda client: None
        self.on_look: Callable[[], Awaitable[None]] | None = None
        self._tuned_workers: set[str] = set()

    @property
    def owned(self) -> bool:
        """Whether the server started this cluster (a LocalCluster) itself."""
        return self.local is not None

    async def start(self) -> None:
        """Start the LocalCluster (or connect to the scheduler), tune it and take a first look.

        Blocks the calling coroutine until the workers are up; the event loop stays free.
        """
        from distributed import Client, LocalCluster

        s = self.settings
        if s.scheduler_address:
            logger.info("connecting to the Dask scheduler at %s", s.scheduler_address)
            self.client = await Client(s.scheduler_address, asynchronous=True, set_as_default=False)
        else:
            quiet_monitoring()
            self.local = await LocalCluster(
                n_workers=s.n_workers,
                threads_per_worker=s.threads_per_worker,
                processes=s.processes,
                memory_limit=s.memory_limit,
                **_loopback_options(s.processes),
                # With the dashboard off the scheduler still serves its HTTP
                # routes (health, metrics): on a free loopback port, never 8787.
                dashboard_address=dashboard_address(s.dashboard_address, s.host),
                scheduler_kwargs=None if s.dashboard_address else {"dashboard": False},
                preload=[WORKER_PRELOAD],  # each worker's clock, as this process's (see there)
                asynchronous=True,
            )
            self.client = await Client(self.local, asynchronous=True, set_as_default=False)
        _tune_client(self.client)
        await self.info()
        await self._tune_local_cluster()

    async def close(self) -> None:
        """Close the client, then the cluster this server started."""
        if self.client is not None:
            await self.client.close()
        if self.local is not None:
            if not self.settings.processes:
                # In-process workers would wait for abandoned tasks' threads
                # (a cancelled sleep(3600) included); don't.
                await asyncio.gather(
                    *(w.close(executor_wait=False) for w in self.local.workers.values()),
                    return_exceptions=True,
                )
            await self.local.close()

    # -- looking -----------------------------------------------------------

    async def info(self) -> ClusterSnapshot:
        """Ask the scheduler for a fresh description of the cluster.

        Raises:
            Unavailable: The scheduler cannot be reached.
        """
        if self.client is None:
            raise cluster_starting()
        self.check_ok()
        try:
            identity = await asyncio.wait_for(
                self.client.scheduler.identity(n_workers=-1), SCHEDULER_TIMEOUT
            )
        except (OSError, asyncio.TimeoutError) as exc:
            raise Unavailable(f"the Dask scheduler is unreachable: {exc or 'timed out'}") from exc
        self.snapshot = self._make_snapshot(identity)
        return self.snapshot

    def check_ok(self) -> None:
        """Raise :class:`Unavailable` (with what still works) while the scheduler is lost."""
        if not self.ok:
            raise Unavailable(self.outage_message())

    def totals(self) -> tuple[int, int, int] | None:
        """``(workers, threads, memory)`` as last seen, for the metrics."""
        snap = self.snapshot
        return None if snap is None else (snap.n_workers, snap.total_threads, snap.total_memory)

    def outage_message(self) -> str:
        """What a caller is told while the scheduler is lost."""
        address = self.settings.scheduler_address or "of the LocalCluster"
        return (
            f"the Dask scheduler {address} is unreachable; the service reconnects when it "
            "is back (jobs on the threads, processes and synchronous schedulers still run)"
        )

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
        if self.local is not None:
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
            n_workers_wanted=self.wanted,
        )

    @property
    def wanted(self) -> int:
        """The number of workers of the server's own LocalCluster (0: not its own)."""
        return len(self.local.worker_spec) if self.local is not None else 0

    async def _keep_size(self, snapshot: ClusterSnapshot) -> None:
        """Start again the workers of the server's own LocalCluster that Dask gave up on,
        and say (``on_size``) whether the cluster is at its size.

        A nanny restarts its worker when the process dies; but a worker lost
        again while it restarts can stay away past Dask's
        ``distributed.deploy.lost-worker-timeout``, and the LocalCluster then
        closes its nanny for good while keeping it in its spec. ``scale`` to
        the spec's own size starts a nanny for each such entry (Dask's
        ``SpecCluster`` brings its workers in line with its spec).
        """
        if self.local is None:
            return
        missing = self.wanted - len(self.local.workers)
        if missing > 0:
            logger.warning(
                "the cluster lost %d of its %d workers for good (their nannies closed): "
                "starting them again",
                missing,
                self.wanted,
            )
            self.restorations += missing
            self.local.scale(self.wanted)
        full = snapshot.n_workers >= self.wanted
        if full != self.full:
            self.full = full
            if full:
                logger.info("the cluster is back to its %d workers", self.wanted)
            else:
                logger.warning(
                    "the cluster has %d of its %d workers", snapshot.n_workers, self.wanted
                )
            if self.on_size is not None:
                await self.on_size(full)

    def _dashboard_link(self) -> str:
        if self.local is not None and not self.settings.dashboard_address:
            return ""  # the scheduler's HTTP server runs, but without the dashboard
        try:
            return str(self.client.dashboard_link or "")
        except Exception:  # no dashboard: distributed raises rather than returning None
            return ""

    # -- watching ----------------------------------------------------------

    async def watch(self) -> None:
        """Refresh the snapshot; after two failed looks, declare the cluster lost and reconnect."""
        failures = 0
        while True:
            await asyncio.sleep(SNAPSHOT_INTERVAL)
            try:
                identity = await asyncio.wait_for(
                    self.client.scheduler.identity(n_workers=-1), SCHEDULER_TIMEOUT
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                logger.debug("cluster look failed (%d): %s", failures, exc)
                if failures >= 2 and self.ok:
                    await self._set_ok(False, f"{type(exc).__name__}: {exc}")
                if not self.ok and self.settings.scheduler_address:
                    await self._reconnect()
                continue
            failures = 0
            self.snapshot = self._make_snapshot(identity)
            await self._keep_size(self.snapshot)
            await self._tune_local_cluster()
            if self.on_look is not None:
                await self.on_look()
            if not self.ok:
                await self._set_ok(True, "")

    async def _set_ok(self, ok: bool, why: str) -> None:
        self.ok = ok
        if ok:
            logger.warning("the Dask scheduler is reachable again: serving")
        else:
            logger.error("lost the Dask scheduler (%s): health is NOT_SERVING", why)
            self.on_lost()
        if self.on_health is not None:
            await self.on_health(ok)

    async def _reconnect(self) -> None:
        from distributed import Client

        old = self.client
        try:
            client = await asyncio.wait_for(
                Client(self.settings.scheduler_address, asynchronous=True, set_as_default=False),
                SCHEDULER_TIMEOUT,
            )
        except Exception as exc:
            logger.debug("reconnect to %s failed: %s", self.settings.scheduler_address, exc)
            return
        _tune_client(client)
        self.client = client
        self.on_client(client)
        with contextlib.suppress(Exception):  # the old connection is gone anyway
            await asyncio.wait_for(old.close(), SCHEDULER_TIMEOUT)
        logger.info("reconnected to the Dask scheduler at %s", self.settings.scheduler_address)

    async def cancel_task(self, key: str, reason: str) -> None:
        """Cancel the task ``key`` on the cluster, whoever submitted it (best effort)."""
        from distributed import Future

        try:
            future: Future[Any] = Future(key, self.client)
            await self.client.cancel([future], force=True, reason=reason)
        except Exception as exc:  # the owning replica cancels it at its next look anyway
            logger.warning("could not cancel task %s on the cluster: %s", key, exc)

    # -- tuning ------------------------------------------------------------

    async def _tune_local_cluster(self) -> None:
        """Shorten the batching intervals of the cluster this server owns.

        Dask batches scheduler-to-worker messages every 5 ms and worker-to-
        scheduler ones every 2 ms, which together dominate a trivial job's
        round trip. A LocalCluster is the server's own, so it trades a little
        batching for latency: 1 ms each way (messages within 1 ms still go
        together). An external cluster is left as its operator configured it.
        """
        if self.local is None:
            return
        scheduler = getattr(self.local, "scheduler", None)
        for comm in getattr(scheduler, "stream_comms", {}).values():
            if hasattr(comm, "interval"):
                comm.interval = 0.001
        workers = {w.address for w in self.snapshot.workers} if self.snapshot else set()
        if workers == self._tuned_workers:
            return

        def tune(dask_worker: Any) -> None:
            stream = getattr(dask_worker, "batched_stream", None)
            if stream is not None and hasattr(stream, "interval"):
                stream.interval = 0.001

        try:
            await asyncio.wait_for(self.client.run(tune), SCHEDULER_TIMEOUT)
            self._tuned_workers = workers
        except Exception as exc:  # a worker on its way out; the next look tries again
            logger.debug("could not tune workers: %s", exc)


def quiet_monitoring(
    config: dict[str, Any] | None = None, defaults: list[Any] | None = None
) -> None:
    """Make :data:`MONITORING_DEFAULTS` Dask's defaults (in ``config``/``defaults``:
    Dask's global ones unless given); keys the operator configured keep their values."""
    import dask.config

    dask.config.update_defaults(
        MONITORING_DEFAULTS,
        config=dask.config.config if config is None else config,
        defaults=dask.config.defaults if defaults is None else defaults,
    )


def _loopback_options(processes: bool) -> dict[str, Any]:
    """LocalCluster options that keep its scheduler, workers and nannies on loopback."""
    if processes:
        # TCP between processes; the workers' HTTP routes follow their host.
        return {"host": CLUSTER_HOST}
    # Thread workers talk inproc:// (no host may be given), and a worker's HTTP
    # routes, with no address of their own, would then bind every interface.
    from distributed import Worker

    class LoopbackHTTPWorker(Worker):
        """A worker whose HTTP routes (and dashboard, if asked for) listen on loopback."""

        def __init__(self, *args: Any, dashboard_address: Any = None, **kwargs: Any) -> None:
            super().__init__(*args, dashboard_address=f"{CLUSTER_HOST}:0", **kwargs)

    return {"worker_class": LoopbackHTTPWorker}


def dashboard_address(configured: str, host: str) -> str:
    """Where the scheduler's HTTP server listens, given ``--dashboard-address`` and ``--host``.

    An address with a host of its own (``0.0.0.0:8787``) is kept as given; a
    bare port (``:8787``, ``8787``) gets ``--host``'s host, where Dask would
    bind every interface. Dask's dashboard cannot bind an IPv6 address: an
    IPv6 ``--host`` gives ``127.0.0.1`` for a loopback one, ``0.0.0.0`` for
    ``::``, and otherwise ``127.0.0.1`` with a warning. An empty value (the
    dashboard off) gives a free loopback port for the scheduler's other routes.
    """
    if not configured:
        return f"{CLUSTER_HOST}:0"
    if ":" in host:
        address = host.strip("[]")
        if address == "::":
            host = "0.0.0.0"
        else:
            if not is_loopback(address):
                logger.warning(
                    "the Dask dashboard cannot listen on the IPv6 address %s: it listens on %s; "
                    "give --dashboard-address HOST:PORT to choose",
                    host,
                    CLUSTER_HOST,
                )
            host = CLUSTER_HOST
    parts = []
    for part in configured.split(","):
        part = part.strip()
        if part.isdigit():
            part = f":{part}"
        parts.append(f"{host}{part}" if part.startswith(":") else part)
    return ",".join(parts)


def _tune_client(client: Any) -> None:
    # A default Client batches its messages to the scheduler every 10 ms,
    # which dominates a trivial job's round trip. The service owns this
    # client and sends a steady stream of small updates, so it flushes
    # sooner; BatchedSend still coalesces whatever arrives within 1 ms.
    comm = getattr(client, "scheduler_comm", None)
    if comm is not None and hasattr(comm, "interval"):
        comm.interval = 0.001
