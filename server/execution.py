"""Running work on each Dask scheduler: the pools, and the cluster's client.

``distributed`` runs on the long-lived cluster through the server's
asynchronous :class:`distributed.Client` (the results it leaves there are
:mod:`server.cluster_results`). ``threads`` and ``processes`` run Dask's
local schedulers on pools started once and kept alive: a thread pool, and a
process pool started with ``spawn`` (gRPC and ``fork`` do not mix,
grpc/grpc#13873). ``synchronous`` runs in a driver thread, for debugging.

Nothing here blocks the event loop: local runs and graph building happen in
executor threads. What a job's code raises, on every scheduler, goes through
the rule of :mod:`server.job_errors`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import logging
import multiprocessing
import traceback
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from typing import Any, cast

import dask
import dask.local
import dask.multiprocessing
import dask.threaded

from server import _pickle, job_errors
from server.cluster_results import ClusterResult, flatten
from server.pools import Gate, Occupancy, call_in
from server.process_pools import ParentWatch, ProcessPools
from server.progress import Progress, flatten_keys
from server.result_checks import Check, checked, first, on_worker, unless_collection

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Work:
    """Validated work, ready to run.

    Exactly one of ``call`` (a function with its arguments), ``collections``
    or ``graph`` is set. ``lazy`` marks a call that returns a Dask collection
    to be computed on the job's scheduler. ``inputs``: the jobs whose results
    it waits for, not in place yet (:mod:`server.dependencies`).
    """

    call: tuple[Callable[..., Any], tuple, dict] | None = None
    lazy: bool = False
    collections: tuple[Any, ...] | None = None
    single: bool = False
    graph: Any = None
    keys: Any = None
    inputs: tuple[str, ...] = ()


def _apply(func: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    """Call ``func``: the task of each call in a coalesced batch."""
    return func(*args, **kwargs)


def namespace_graph(graph: Any, keys: Any, prefix: str) -> tuple[dict, Any]:
    """The graph and keys with every key prefixed by ``prefix`` (the job's own).

    On the cluster, a key names data shared by every client: two callers'
    hand-written graphs that both say "x" would otherwise get each other's
    data, and a job's result, held on the cluster, would answer the next job
    with the same key. (Dask collections need none of this: their keys are
    hashes of what they compute.)
    """
    from dask._task_spec import convert_legacy_graph

    nodes = convert_legacy_graph(graph)

    def rename(key: Any) -> Any:
        if isinstance(key, tuple) and key:
            return (f"{prefix}-{key[0]}", *key[1:])
        return f"{prefix}-{key}"

    subs = {key: rename(key) for key in nodes}
    renamed = {subs[key]: node.substitute(subs, key=subs[key]) for key, node in nodes.items()}

    def rename_keys(value: Any) -> Any:
        if isinstance(value, list):
            return [rename_keys(v) for v in value]
        return subs.get(value, value)

    return renamed, rename_keys(keys)


class RemoteError(Exception):
    """An error raised in a pool process whose exception could not be pickled."""


class PoolProcessDied(Exception):
    """A process of the ``processes`` pool died mid-job (a crash, ``os._exit``, a kill)."""


class _Bounded:
    """A view of a thread pool that Dask's threaded scheduler runs at most
    ``max_workers`` tasks of one graph at once on (it reads ``_max_workers``):
    the pool itself is larger, with threads to spare for abandoned calls."""

    def __init__(self, pool: concurrent.futures.ThreadPoolExecutor, max_workers: int) -> None:
        self._pool = pool
        self._max_workers = max_workers

    def submit(self, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        return self._pool.submit(func, *args, **kwargs)


class Executors:
    """The pools and the cluster client that jobs run on."""

    def __init__(
        self,
        client: Any,
        threads: int,
        processes: int,
        in_process_workers: bool = False,
        direct_gather: bool = True,
        share: float = 1.0,
        max_abandoned: int = 16,
        checks_by_value: bool = False,
    ) -> None:
        self.client = client
        # The workers may not import this package (an existing cluster's):
        # what runs there travels by value (server.result_checks.on_worker).
        self._checks_by_value = checks_by_value
        # Results are fetched from the workers themselves, not through the
        # scheduler. Off for a cluster whose workers this server may not
        # reach (behind NAT): Dask falls back to the scheduler only after
        # each connection attempt times out (distributed.comm.timeouts.connect).
        self._direct_gather = direct_gather
        # Workers that are threads of this process: a task's sys.exit() there
        # would end the server, so calls sent to them are wrapped.
        self._in_process_workers = in_process_workers
        # Each pool of jobs has threads to spare for calls of cancelled jobs,
        # which run on (a thread cannot be stopped); its gate keeps them from
        # taking the pool with them (server.pools).
        self._threads = concurrent.futures.ThreadPoolExecutor(
            threads + max_abandoned, "dask-compute-threads"
        )
        # What a graph's tasks see of it: ``threads`` threads, as configured.
        self._graph_threads = _Bounded(self._threads, threads)
        # Driver threads block on dask's local schedulers and run synchronous
        # jobs; they wait rather than compute, so they are plenty.
        drivers = max(32, 4 * threads)
        self._drivers = concurrent.futures.ThreadPoolExecutor(
            drivers + max_abandoned, "dask-compute-driver"
        )
        # The service's own work (encoding results, loading payloads) never
        # waits behind callers' jobs.
        self._service = concurrent.futures.ThreadPoolExecutor(4, "dask-compute-service")
        self._gates = {
            "threads": Gate("threads", threads, share, max_abandoned),
            "synchronous": Gate("synchronous (driver)", drivers, share, max_abandoned),
            "processes": Gate(
                "processes", processes, share, max_abandoned, "their processes are being ended"
            ),
        }
        self._n_processes = processes
        # Pool processes end with the server, even one killed with SIGKILL.
        self._parent_watch = ParentWatch(multiprocessing.get_context("spawn"))
        self._process_pools = ProcessPools(self._new_process_pool)
        # Calls submitted in the same turn of the event loop go to the
        # scheduler together (see _submit_coalesced).
        self._pending_calls: list[tuple[Any, tuple, dict, str, asyncio.Future]] = []

    def _new_process_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        context = multiprocessing.get_context("spawn")
        return concurrent.futures.ProcessPoolExecutor(
            self._n_processes, mp_context=context, **self._parent_watch.pool_options()
        )

    def _replace_broken_pool(self, broken: concurrent.futures.ProcessPoolExecutor) -> None:
        # A pool whose process died is broken for good (every later submit
        # fails); the next job gets a fresh pool. Jobs sharing the broken pool
        # fail with the same clear error.
        if self._process_pools.current is broken:
            logger.warning("a processes-pool process died; starting a new pool")
            broken.shutdown(wait=False, cancel_futures=True)
            self._process_pools.replace(broken)

    def refusal(self, scheduler: str) -> str | None:
        """Why ``scheduler``'s pool takes no new job now (``None``: it does)."""
        gate = self._gates.get(scheduler)
        return None if gate is None else gate.refusal()

    async def warm_up(self) -> None:
        """Start the process pool's processes before the first job needs them."""
        loop = asyncio.get_running_loop()
        pool = self._process_pools.current
        futures = [loop.run_in_executor(pool, _pickle.warm_up) for _ in range(self._n_processes)]
        pids = await asyncio.gather(*futures)
        logger.info("processes pool ready: %d processes", len(set(pids)))

    async def in_thread(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run the service's own ``func`` (not a job's) in a thread of the service's pool."""
        return await call_in(self._service, functools.partial(func, *args, **kwargs))

    async def run(
        self,
        work: Work,
        scheduler: str,
        key: str,
        progress: Progress | None = None,
        occupancy: Occupancy | None = None,
        check: Check | None = None,
    ) -> Any:
        """Run ``work`` on ``scheduler`` and return its result.

        ``key`` names the job's task on the cluster. Cancelling the awaiting
        task cancels the cluster's futures; local runs are abandoned (a
        ``processes`` job's process is ended, see :class:`server.process_pools.ProcessPools`).
        ``progress`` is kept current with Dask's own task counts;
        ``occupancy`` says what the job holds of the local pools, until its
        calls really return. ``check`` is called with a local job's value in
        the thread that made it (:mod:`server.result_checks`); what it raises
        fails the job. (A ``processes`` call's value was pickled in its child
        already; a ``distributed`` call's is checked in its task, on the
        worker: :func:`server.result_checks.on_worker`.)
        """
        progress = progress or Progress()
        occupancy = occupancy or Occupancy()
        runner = getattr(self, f"_run_{scheduler}")
        if work.call is not None and not work.lazy:
            progress.single_task(done=False)
            result = await runner(work, progress, occupancy, key, check)
            progress.single_task(done=True)
            return result
        if work.lazy:
            # (a lazy work is a call)
            func, args, kwargs = cast("tuple[Callable[..., Any], tuple, dict]", work.call)
            unless = unless_collection(check)
            collection = await self._drive(occupancy, checked, unless, None, func, *args, **kwargs)
            if not dask.is_dask_collection(collection):
                return collection  # already a value: nothing left to compute
            work = Work(collections=(collection,), single=True)
        return await runner(work, progress, occupancy, key, check)

    async def _run_distributed(
        self, work: Work, progress: Progress, occupancy: Occupancy, key: str, check: Check | None
    ) -> Any:
        client = self.client
        if work.call is not None:
            func, args, kwargs = work.call
            if self._in_process_workers:
                func = functools.partial(job_errors.run_user_code, func)
            func = on_worker(func, self._checks_by_value)  # (its value checked in its task)
            futures = await self._submit_coalesced(func, args, kwargs, key)
        elif work.collections is not None:
            futures = client.compute(list(work.collections))
        else:
            graph, keys = namespace_graph(work.graph, work.keys, key)
            futures = client.get(graph, keys, sync=False)
        progress.roots = list(flatten_keys(futures))
        try:
            if work.call is None:
                try:
                    await progress.first_look(client)
                except Exception as exc:  # progress is advisory; the job goes on
                    logger.debug("no first look at the job's tasks: %s", exc)
            # Wait for the tasks without moving their data here: the result
            # stays on the cluster until someone fetches it.
            for future in flatten(futures):
                error = await future.exception()
                if future.status == "error" and error is not None:
                    converted = job_errors.job_exception(error)
                    if converted is not error:
                        raise converted
                if future.status != "finished":
                    await future  # raises the task's error (with its traceback) or cancellation
        except asyncio.CancelledError:
            await client.cancel(flatten(futures), force=True)
            futures = future = None  # (see below)
            raise
        except BaseException as exc:
            # The task's error, kept in its future's state, carries the
            # traceback of its way here, whose frames hold that future (Dask's
            # own Future._result, and this one): a cycle that the client's
            # table of futures keeps alive, and the failed task stays on the
            # cluster for good. The frames' locals go (their lines stay, for
            # the job's traceback).
            futures = future = None
            traceback.clear_frames(exc.__traceback__)
            raise
        if work.collections is not None:
            shape = "single" if work.single else "tuple"
        else:
            shape = "plain"
        return ClusterResult(futures, shape, direct=self._direct_gather)

    async def _submit_coalesced(self, func: Any, args: tuple, kwargs: dict, key: str) -> Any:
        """Submit one call to the cluster, together with the others of this loop turn.

        A batch of jobs (SubmitJobs) or many concurrent callers produce many
        calls at once; one Client.map sends them as a single graph update,
        where a submit each would make the scheduler handle each on its own.
        """
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending_calls.append((func, args, kwargs, key, future))
        if len(self._pending_calls) == 1:
            asyncio.get_running_loop().call_soon(self._flush_calls)
        return await future

    def _flush_calls(self) -> None:
        pending, self._pending_calls = self._pending_calls, []
        try:
            if len(pending) == 1:
                func, args, kwargs, key, _ = pending[0]
                # Through _apply: the call's own keywords (a "key", a "pure") are its own.
                submitted = [self.client.submit(_apply, func, args, kwargs, key=key, pure=False)]
            else:
                submitted = self.client.map(
                    _apply,
                    [p[0] for p in pending],
                    [p[1] for p in pending],
                    [p[2] for p in pending],
                    key=[p[3] for p in pending],
                    pure=False,
                )
        except Exception as exc:  # e.g. an unpicklable function: each job fails with it
            for *_, waiter in pending:
                if not waiter.done():
                    waiter.set_exception(exc)
            return
        for (*_, waiter), cluster_future in zip(pending, submitted):
            if waiter.cancelled():  # its job was cancelled before the batch went out
                asyncio.ensure_future(self.client.cancel([cluster_future], force=True))
            elif not waiter.done():
                waiter.set_result(cluster_future)

    async def _run_threads(
        self, work: Work, progress: Progress, occupancy: Occupancy, key: str, check: Check | None
    ) -> Any:
        if work.call is not None:
            func, args, kwargs = work.call
            gate = self._gates["threads"]
            return await gate.call(
                self._threads, occupancy, checked, check, None, func, *args, **kwargs
            )
        if work.collections is not None:
            return await self._drive(
                occupancy,
                checked,
                check,
                first if work.single else None,
                dask.compute,
                *work.collections,
                scheduler="threads",
                pool=self._graph_threads,
                callbacks=[progress.callback()],
            )
        return await self._drive(
            occupancy,
            checked,
            check,
            None,
            dask.threaded.get,
            work.graph,
            work.keys,
            pool=self._graph_threads,
            callbacks=[progress.callback()],
        )

    async def _drive(
        self, occupancy: Occupancy, func: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> Any:
        """A job's call in a driver thread (a local scheduler's, or a synchronous job's)."""
        gate = self._gates["synchronous"]
        return await gate.call(self._drivers, occupancy, func, *args, **kwargs)

    async def _run_processes(
        self, work: Work, progress: Progress, occupancy: Occupancy, key: str, check: Check | None
    ) -> Any:
        gate, owner = self._gates["processes"], occupancy.owner
        await gate.enter(owner)
        pools = self._process_pools
        pool = pools.enter()
        occupancy.enter()
        live = True
        try:
            return await self._run_on_pool(pool, work, progress, occupancy, check)
        except BrokenProcessPool as exc:
            self._replace_broken_pool(pool)
            raise PoolProcessDied(
                "a process of the 'processes' pool died while running this job (a crash, "
                "os._exit or a kill); the pool was restarted"
            ) from exc
        except asyncio.CancelledError:
            # Its process would run on for nobody: the pool is retired, and
            # ended as soon as no other job runs there. Until it is, the call
            # is abandoned: its place goes to the next (on the fresh pool),
            # and its job counts against its caller until the process is gone.
            live = False
            gate.abandon(owner)

            def ended() -> None:
                gate.returned()
                occupancy.leave()

            pools.abandon(pool, ended)
            raise
        finally:
            if live:
                gate.leave(owner)
                occupancy.leave()
                pools.leave(pool)

    async def _run_on_pool(
        self,
        pool: concurrent.futures.ProcessPoolExecutor,
        work: Work,
        progress: Progress,
        occupancy: Occupancy,
        check: Check | None,
    ) -> Any:
        if work.call is not None:
            payload = await self.in_thread(_pickle.dumps, work.call)
            loop = asyncio.get_running_loop()
            ok, data, tb = await loop.run_in_executor(pool, job_errors.call_in_child, payload)
            value = await self.in_thread(_pickle.loads, data) if data else None
            if ok:
                return value
            if isinstance(value, BaseException):
                value = job_errors.job_exception(value)  # already so, unless unpickling made it odd
                setattr(value, job_errors.TRACEBACK_ATTRIBUTE, tb)
                raise value
            raise RemoteError(tb or "the job failed in a pool process")
        if work.collections is not None:
            return await self._drive(
                occupancy,
                checked,
                check,
                first if work.single else None,
                dask.compute,
                *work.collections,
                scheduler="processes",
                pool=pool,
                callbacks=[progress.callback()],
            )
        return await self._drive(
            occupancy,
            checked,
            check,
            None,
            dask.multiprocessing.get,
            work.graph,
            work.keys,
            pool=pool,
            callbacks=[progress.callback()],
        )

    async def _run_synchronous(
        self, work: Work, progress: Progress, occupancy: Occupancy, key: str, check: Check | None
    ) -> Any:
        if work.call is not None:
            func, args, kwargs = work.call
            return await self._drive(occupancy, checked, check, None, func, *args, **kwargs)
        if work.collections is not None:
            return await self._drive(
                occupancy,
                checked,
                check,
                first if work.single else None,
                dask.compute,
                *work.collections,
                scheduler="sync",
                callbacks=[progress.callback()],
            )
        return await self._drive(
            occupancy,
            checked,
            check,
            None,
            dask.local.get_sync,
            work.graph,
            work.keys,
            callbacks=[progress.callback()],
        )

    def close(self) -> None:
        """Stop the pools without waiting for abandoned work."""
        self._threads.shutdown(wait=False, cancel_futures=True)
        self._drivers.shutdown(wait=False, cancel_futures=True)
        self._service.shutdown(wait=False, cancel_futures=True)
        # A pool process may be deep in an abandoned job: end it rather than wait for it.
        self._process_pools.close()
