"""The service's behaviour, with no gRPC in sight: a thin front over its parts.

:class:`ComputeCore` wires the parts and keeps one public method per RPC;
each part owns one concern and knows nothing of gRPC:

- :mod:`server.cluster`: the Dask cluster and client, snapshots, the watch;
- :mod:`server.admission`: the one gate (policy, permissions, limits,
  idempotency, validation), with :mod:`server.requests` turning requests
  into work;
- :mod:`server.runner`: recording, starting, time limits, cancelling, ending;
- :mod:`server.waiting`: waiting for jobs, and their progress;
- :mod:`server.held_results`: results held, stored, served and released;
- :mod:`server.dependencies`: jobs that use other jobs' results;
- :mod:`server.uploads`: objects callers upload;
- :mod:`server.replicas`: alone with the store, or one of several replicas;
- :mod:`server.recovery`: jobs left unfinished by a restart or a lost replica;
- :mod:`server.janitor`: expiry.

It takes and returns plain Python objects and raises :mod:`server.errors`;
the servicer only translates. See ARCHITECTURE.md for the path of a ``Run``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from typing import Any

import server
from server import objects, replicas, results, worker_stream
from server.admission import Admission, Admitted, policy_callers
from server.auth import ANONYMOUS, Caller
from server.cluster import Cluster, ClusterSnapshot, WorkerSnapshot
from server.config import SCHEDULERS, Settings
from server.dependencies import Dependencies
from server.errors import JobNotFound, cluster_starting, shutting_down
from server.execution import Executors
from server.held_results import HeldResults
from server.janitor import Janitor
from server.jobs import JobRecord, JobState, JobTable, MemoryJobTable, check_job_id, new_job_id
from server.metrics import Metrics
from server.recording import Recording
from server.recovery import Recovery
from server.registry import FunctionSpec, Registry
from server.requests import JobRequest, Preparer

# By name: in the class, `results` is its method (annotations resolve there).
from server.results import ResultStream
from server.runner import Runner
from server.tracing import OFF, Tracing
from server.waiting import Waiting

__all__ = ["ClusterSnapshot", "ComputeCore", "JobRequest", "WorkerSnapshot"]

logger = logging.getLogger(__name__)


class ComputeCore:
    """Runs jobs on a Dask cluster; see the module docstring.

    Args:
        settings: The server's settings.
        registry: The named functions offered.
        job_table: Where job records live; defaults to ``settings.job_store_url``.
        callers: The caller named ``owner`` with its current permissions, or
            ``None`` if unknown: the gate asks it when a stored job is re-run.
            Defaults to the policy of ``settings`` (no credentials: anonymous).
        tracing: The jobs' spans (:mod:`server.tracing`); off by default.
    """

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        job_table: JobTable | None = None,
        callers: Callable[[str], Caller | None] | None = None,
        tracing: Tracing = OFF,
    ) -> None:
        self.settings = settings
        self.registry = registry
        #: Changes on every start, so clients can tell that the server restarted.
        self.instance_id = new_job_id()
        self.jobs: JobTable = job_table if job_table is not None else self._make_table()
        self._executors: Executors | None = None
        self._draining = False
        self._closing = False
        self._background: list[asyncio.Task] = []
        s = settings
        self.cluster = Cluster(s)
        self.replicas, self.uploads = replicas.strategies(s, self.jobs, self.cluster, self._pools)
        #: Objects uploaded by callers, held on the cluster.
        self.objects = self.uploads.held
        preparer = Preparer(registry, self.uploads.stand_ins, self._in_thread)
        self.admission = Admission(
            s,
            self.jobs,
            preparer,
            cluster_ok=lambda: self.cluster.ok,
            outage_message=self.cluster.outage_message,
            callers=callers or policy_callers(s),
            pool_refusal=self._pool_refusal,
            check_inputs=lambda ids, caller: self.inputs.check(ids, caller),
        )
        #: Counters and gauges; the server exposes them on --metrics-port.
        self.metrics = Metrics(pending=lambda: self.admission.pending, cluster=self.cluster.totals)
        self.held = HeldResults(
            self.jobs,
            self.replicas,
            self._pools,
            self.get_job,
            s.stored_result_bytes,
            s.inline_result_bytes,
            s.result_ttl,
        )
        self.waiting: Waiting
        #: Jobs that use other jobs' results.
        self.inputs = Dependencies(
            self.get_job, self.held, lambda *a: self.waiting.wait_job(*a), preparer.prepare
        )
        self.inputs.counted = self.metrics.job_input
        self.runner = Runner(
            self.jobs,
            self.admission,
            self.replicas,
            self._pools,
            self.metrics,
            on_end=lambda job_id: self.waiting.wake(job_id),
            succeeded=self.held.keep,
            inputs=self.inputs,
            tracing=tracing,
        )
        self.recording = Recording(
            self.jobs, self.admission, self.replicas, self._pools, self.metrics, self.runner
        )
        self.waiting = Waiting(
            self.jobs, self.runner.runtimes, self.get_job, self.cluster, self.replicas.as_stored
        )
        self.recovery = Recovery(self.jobs, self.admission, self.runner, self._pools)
        self.janitor = Janitor(
            s, self.jobs, self.uploads, self.held, self._forget, self.inputs.in_use
        )
        lost = "the connection to the Dask scheduler was lost while the job ran"
        self.cluster.on_lost = lambda: self.runner.fail_on_cluster(lost)
        self.cluster.on_look = lambda: self.replicas.on_look(self.runner)
        self.cluster.on_client = self._new_client

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
        """Start (or connect to) the cluster, the client and the local pools, then
        settle the jobs an earlier run left unfinished."""
        s = self.settings
        await self.cluster.start()
        self._executors = Executors(
            self.cluster.client,
            s.local_threads_count,
            s.local_processes_count,
            in_process_workers=self.cluster.owned and not s.processes,
            share=s.pool_share,
            max_abandoned=s.max_abandoned_threads,
            # Fetch results straight from our own workers; an external
            # cluster's may be unreachable from here (Dask would wait out a
            # connect timeout on each fetch before asking its scheduler).
            direct_gather=self.cluster.owned,
            checks_by_value=not self.cluster.owned,
        )
        await self.replicas.at_start(self.recovery)
        self._background = [
            asyncio.create_task(self._executors.warm_up(), name="warm-up"),
            asyncio.create_task(self.cluster.watch(), name="cluster-watch"),
            *self.replicas.background(self.recovery),
            asyncio.create_task(self.janitor.run(), name="janitor"),
        ]
        snap = self.cluster.snapshot
        assert snap is not None
        logger.info(
            "Dask cluster ready: %s, %d workers, %d threads",
            snap.scheduler_address,
            snap.n_workers,
            snap.total_threads,
        )

    def _new_client(self, client: Any) -> None:
        if self._executors is not None:
            self._executors.client = client

    def drain(self) -> None:
        """Refuse new jobs (UNAVAILABLE) while running ones finish."""
        self._draining = True

    async def wait_idle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every running job; returns whether none is left."""
        return await self.runner.wait_idle(timeout)

    def cancel_all(self, reason: str) -> int:
        """Cancel every unfinished job with ``reason``; returns how many."""
        return self.runner.cancel_all(reason)

    async def close(self) -> None:
        """Cancel unfinished jobs, then close the client, the cluster and the pools."""
        if self._closing:
            return
        self.runner.cancel_all("the server shut down")
        self._closing = True
        self.uploads.clear()
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self.runner.tasks(), *self._background, return_exceptions=True)
        await self.held.close()
        await self.replicas.close()
        await self.jobs.close()  # writes what is still queued
        await self.cluster.close()
        if self._executors is not None:
            self._executors.close()
        logger.info("Dask client and cluster closed")

    @property
    def ready(self) -> bool:
        """Whether the core accepts jobs."""
        return self._executors is not None and not (self._draining or self._closing)

    @property
    def cluster_ok(self) -> bool:
        """Whether the Dask scheduler answers."""
        return self.cluster.ok

    @property
    def on_cluster_health(self) -> Any:
        """Awaited with the scheduler's health as it changes (the server's health service)."""
        return self.cluster.on_health

    @on_cluster_health.setter
    def on_cluster_health(self, callback: Any) -> None:
        self.cluster.on_health = callback

    def _check_ready(self) -> None:
        if self._draining:
            raise shutting_down()
        self._pools()

    def _pools(self) -> Executors:
        """The pools, for work on behalf of jobs already accepted."""
        if self._closing:
            raise shutting_down()
        if self._executors is None:
            raise cluster_starting()
        return self._executors

    def _pool_refusal(self, scheduler: str) -> str | None:
        return None if self._executors is None else self._executors.refusal(scheduler)

    async def _in_thread(self, func: Callable[..., Any], *args: Any) -> Any:
        return await self._pools().in_thread(func, *args)

    def _forget(self, job_ids: set[str]) -> None:
        self.runner.forget(job_ids)
        self.held.forget(job_ids)
        self.admission.forget(job_ids)

    # -- the cluster -------------------------------------------------------

    async def cluster_info(self) -> ClusterSnapshot:
        """A fresh description of the cluster (raises Unavailable when unreachable)."""
        return await self.cluster.info()

    def cluster_snapshot(self) -> ClusterSnapshot | None:
        """The cluster as last seen (at most a few seconds old), without asking."""
        return self.cluster.snapshot

    def versions(self) -> dict[str, str]:
        """Versions of the software this server runs."""
        return server.versions()

    def schedulers(self) -> tuple[str, ...]:
        """The schedulers that jobs may name."""
        return SCHEDULERS

    def functions(self) -> list[FunctionSpec]:
        """The named functions, sorted by name."""
        return list(self.registry)

    # -- jobs --------------------------------------------------------------

    async def submit(
        self,
        request: JobRequest,
        caller: Caller = ANONYMOUS,
        abandoned: Callable[[], str] | None = None,
        waited: bool = False,
    ) -> JobRecord:
        """Pass a job through the gate, record it, start it, and return its record.

        A request with a ``request_id`` that this caller used before returns
        the first job's record instead. ``abandoned`` and ``waited``: see
        :meth:`server.recording.Recording.accept`.

        Raises:
            InvalidArgument: Bad scheduler, format, arguments or payload.
            FunctionNotFound: No such named function.
            PermissionDenied: Pickled work from a caller without ``code``.
            ResourceExhausted: A limit on unfinished jobs was reached.
            Unavailable: The core is starting or stopping.
        """
        self._check_ready()
        admitted = await self.admission.admit(request, caller)
        if isinstance(admitted, JobRecord):
            return admitted
        (record,) = await self.recording.accept([admitted], abandoned, waited)
        return record

    async def submit_many(
        self, requests: Sequence[JobRequest], caller: Caller = ANONYMOUS
    ) -> list[JobRecord]:
        """Pass every job through the gate, then accept them all; nothing is accepted
        if one is refused (the message names it by index)."""
        self._check_ready()
        admitted = await self.admission.admit_many(requests, caller)
        fresh = [a for a in admitted if isinstance(a, Admitted)]
        accepted = iter(await self.recording.accept(fresh) if fresh else [])
        return [a if isinstance(a, JobRecord) else next(accepted) for a in admitted]

    async def run(
        self,
        request: JobRequest,
        caller: Caller = ANONYMOUS,
        why_cancelled: Callable[[], str] = lambda: "the caller of Run went away",
        release: bool = False,
    ) -> JobRecord:
        """Submit a job and wait for it to finish.

        If the caller stops waiting (its RPC is cancelled or its deadline passes),
        the job is cancelled too, with ``why_cancelled()`` as the reason. ``release``:
        the caller frees the result once it has it, so it is not kept with the
        record. A job another replica adopted meanwhile ends as that one says.
        """
        record = await self.submit(request, caller, why_cancelled, waited=True)
        if release and record.job_id in self.runner.runtimes:
            self.held.answer_once(record.job_id)
        await self.runner.run_in_caller(record.job_id, why_cancelled)
        gone = lambda: self.cancel_job(record.job_id, why_cancelled(), caller)
        return await self.waiting.end_of_run(record.job_id, caller, gone)

    async def get_job(self, job_id: str, caller: Caller = ANONYMOUS) -> JobRecord:
        """The record of ``job_id``, as stored, if ``caller`` may see it.

        Raises:
            JobNotFound: No such job, or another caller's (ids cannot be probed).
        """
        record = self.jobs.cached(check_job_id(job_id)) or await self.jobs.get(job_id)
        record = self.replicas.as_stored(record)
        if not caller.is_admin and record.owner != caller.name:
            raise JobNotFound(resource_name=job_id)
        return record

    async def wait_job(
        self, job_id: str, timeout: float | None, caller: Caller = ANONYMOUS
    ) -> tuple[JobRecord, bool]:
        """Wait until the job finishes or ``timeout`` seconds pass.

        Returns:
            The record, and whether the wait timed out.
        """
        return await self.waiting.wait_job(job_id, timeout, caller)

    async def wait_jobs(
        self, job_ids: list[str], timeout: float | None, caller: Caller = ANONYMOUS
    ) -> tuple[list[JobRecord], bool]:
        """Wait until at least one of the jobs finishes or ``timeout`` seconds pass.

        Returns:
            The records of the jobs finished by then, in the order asked, and
            whether the wait timed out with none finished.
        """
        return await self.waiting.wait_jobs(job_ids, timeout, caller)

    async def progress(self, job_id: str, caller: Caller = ANONYMOUS) -> tuple[int, int]:
        """``(tasks done, tasks in all)`` of a job; (0, 0) when not known.

        Jobs that run on another replica, or ran before a restart, report
        (1, 1) once finished and (0, 0) before.
        """
        return await self.waiting.progress(job_id, caller)

    async def cancel_job(
        self, job_id: str, reason: str = "", caller: Caller = ANONYMOUS
    ) -> tuple[JobRecord, bool]:
        """Cancel a queued or running job.

        Returns:
            The record after the cancel, and whether this call cancelled it.
        """
        record = await self.get_job(job_id, caller)
        if record.state.finished:
            return record, False
        reason = reason or "cancelled by the caller"
        if job_id in self.runner.runtimes:
            did = await self.runner.cancel_and_wait(job_id, reason)
            return await self.get_job(job_id, caller), did
        return await self.replicas.cancel_elsewhere(record, reason)

    async def list_jobs(
        self,
        states: Collection[JobState] = (),
        page_size: int = 0,
        page_token: str = "",
        caller: Caller = ANONYMOUS,
    ) -> tuple[list[JobRecord], str]:
        """A page of the job records ``caller`` may see, newest first, and the next page's token."""
        owner = None if caller.is_admin else caller.name
        return await self.jobs.list(states, page_size, page_token, owner=owner)

    # -- results -----------------------------------------------------------

    async def result(
        self, job_id: str, fmt: str = "auto", caller: Caller = ANONYMOUS
    ) -> results.EncodedResult:
        """The result of a succeeded job, encoded as ``fmt``.

        Raises:
            FailedPrecondition: The job has not succeeded, or JSON was asked
                for a result that has no JSON form.
            NotFound: The result expired or was released.
        """
        return await self.held.result(job_id, fmt, caller)

    async def results(
        self, job_ids: list[str], fmt: str = "auto", caller: Caller = ANONYMOUS
    ) -> list[results.EncodedResult | None]:
        """The results of many succeeded jobs, as :meth:`result` gives each (one
        ``gather`` for those on the cluster; ``None`` for one that is gone)."""
        return await self.held.results(job_ids, fmt, caller)

    async def open_result(
        self,
        job_id: str,
        fmt: str = "auto",
        caller: Caller = ANONYMOUS,
        checksum: bool = True,
    ) -> ResultStream | worker_stream.WorkerStream:
        """A succeeded job's result, encoded for streaming (see
        :meth:`server.held_results.HeldResults.open`); without ``checksum`` the
        stream's ``sha256`` is left for its ``digest()``."""
        return await self.held.open(job_id, fmt, caller, checksum)

    async def release(self, job_id: str, caller: Caller = ANONYMOUS) -> tuple[JobRecord, bool]:
        """Free a finished job's result now (on the cluster too), unless unfinished
        jobs use it; returns whether there was one."""
        return await self.inputs.release(job_id, caller)

    # -- objects -----------------------------------------------------------

    async def put_object(
        self,
        caller: Caller,
        sha256: str,
        size: int,
        segment_sizes: Sequence[int],
        chunks: AsyncIterator[bytes],
    ) -> tuple[objects.StoredObject, bool]:
        """Take an upload, check it, load it on the cluster and hold it (see
        :class:`server.uploads.Uploads`).

        Returns:
            The held object, and whether it was held already (then the bytes
            are not read).

        Raises:
            PermissionDenied: The caller lacks ``code`` (loading pickled data runs code).
            InvalidArgument, InvalidPayload: A bad header, a cut-off upload, a hash
                mismatch, or bytes that cannot be loaded: nothing is kept.
            ResourceExhausted: Larger than ``max_object_bytes``.
            Unavailable: The cluster does not answer (or, with replicas, the
                object could not be published): nothing is kept.
        """
        self.uploads.authorize(caller)
        self._check_ready()
        return await self.uploads.put(caller, sha256, size, segment_sizes, chunks)

    async def get_object(self, object_id: str, caller: Caller = ANONYMOUS) -> objects.StoredObject:
        """A held object of ``caller``'s (raises NotFound, or Unavailable with replicas)."""
        return await self.uploads.get(object_id, caller)

    async def delete_object(self, object_id: str, caller: Caller = ANONYMOUS) -> bool:
        """Free an object; returns whether it was held (with replicas: by any of them)."""
        return await self.uploads.delete(object_id, caller)

    async def expire(self, now: float) -> None:
        """Drop what has expired as of ``now`` (see :class:`server.janitor.Janitor`)."""
        await self.janitor.expire(now)
