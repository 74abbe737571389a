"""Jobs as inputs: a job that uses other jobs' results.

A caller names an upstream job where a value goes: ``{"$job": id}`` in a
named call's JSON arguments, or (the SDK's pickler) the persistent id
``dask-compute-job:<id>`` in a pickled call or graph, listed in the request's
``job_ids``. :class:`Dependencies` owns what follows:

- at admission (:meth:`Dependencies.check`), each upstream must be the
  caller's own (an admin may name any; another's answers NOT_FOUND) and, if it
  succeeded already, its result must still be held (else FAILED_PRECONDITION);
- while a downstream job is unfinished, it keeps its upstreams' results held:
  the janitor skips them (:meth:`Dependencies.in_use`), and ``ReleaseJob`` on
  one is refused, naming the dependents (:meth:`Dependencies.release`);
- before the downstream starts (:meth:`Dependencies.inputs`, from the
  runner), it waits for each upstream's end (it stays QUEUED meanwhile), then
  fails with :class:`UpstreamFailed` if one did not succeed, or gets its work
  with the results in place: on ``distributed`` the upstream's future held on
  the cluster (a Dask dependency: the data never comes here), on the local
  schedulers the value, fetched from where it is held.

In a pickled graph the futures are made real dependencies of the tasks that
use them (:func:`bind_futures`): a future put in a task that was built around
something else is not one.
"""

from __future__ import annotations

import asyncio
import logging
import operator
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from dask.sizeof import sizeof

from server import objects
from server._pickle import JOB_PERSISTENT_ID_PREFIX
from server.cluster_results import ClusterResult
from server.errors import FailedPrecondition, InvalidArgument, NotFound
from server.jobs import JobRecord, JobState

logger = logging.getLogger(__name__)

#: How a named call's JSON arguments name a job's result: {"$job": "<job_id>"}.
JSON_MARKER = "$job"
#: How a pickle names a job's result: "dask-compute-job:<job_id>".
PERSISTENT_ID_PREFIX = JOB_PERSISTENT_ID_PREFIX


class UpstreamFailed(Exception):
    """A job this job uses as an input failed or was cancelled: this job never ran."""


class JobInput:
    """What stands for an upstream job's result while a request is checked at admission."""

    __slots__ = ("job_id",)

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id

    def __repr__(self) -> str:
        return f"JobInput({self.job_id!r})"


def is_json_marker(value: Any) -> bool:
    """Whether a decoded JSON value is a job reference ``{"$job": id}``."""
    return objects.is_json_marker(value, JSON_MARKER)


def json_marker_ids(value: Any, found: list[str] | None = None) -> list[str]:
    """The job ids referenced anywhere in decoded JSON arguments, in order, once each.

    Raises:
        InvalidArgument: A marker whose id is not a string.
    """
    found = [] if found is None else found
    if is_json_marker(value):
        job_id = value[JSON_MARKER]
        if not isinstance(job_id, str) or not job_id:
            raise InvalidArgument(
                f'{{"{JSON_MARKER}": ...}} takes a job id (a string), got {job_id!r}',
                field="call.args",
                reason="INVALID_JOB_INPUT",
            )
        if job_id not in found:
            found.append(job_id)
    elif isinstance(value, dict):
        for item in value.values():
            json_marker_ids(item, found)
    elif isinstance(value, (list, tuple)):
        for item in value:
            json_marker_ids(item, found)
    return found


def replace_json_markers(value: Any, results: dict[str, Any]) -> Any:
    """Arguments with each ``{"$job": id}`` replaced by ``results[id]``."""
    return objects.replace_json_markers(value, results, JSON_MARKER)


class Dependencies:
    """See the module docstring.

    Args:
        get_job: The record of a job, if the caller may see it (else JobNotFound).
        held: The held results (:class:`server.held_results.HeldResults`):
            its ``handle`` (the record and the result, a value or a
            :class:`ClusterResult`; NotFound when gone), ``holds`` and ``release``.
        wait_job: Waits for a job's end: ``(job_id, timeout, caller) -> (record, timed_out)``.
        prepare: Makes a request's work with its inputs in place:
            ``(request, caller, scheduler, inputs) -> (work, target)``
            (:meth:`server.requests.Preparer.prepare`).
        counted: Called with ``(scheduler, bytes)`` for each upstream result
            brought to this server for a local scheduler (a metric).
    """

    def __init__(
        self,
        get_job: Callable[[str, Any], Awaitable[JobRecord]],
        held: Any,
        wait_job: Callable[[str, float | None, Any], Awaitable[tuple[JobRecord, bool]]],
        prepare: Callable[..., Awaitable[tuple[Any, str]]],
        counted: Callable[[str, int], None] = lambda scheduler, nbytes: None,
    ) -> None:
        self.get_job = get_job
        self.held = held
        self.wait_job = wait_job
        self.prepare = prepare
        self.counted = counted
        # upstream job id -> the unfinished jobs that use its result
        self._dependents: dict[str, set[str]] = {}

    # -- admission ---------------------------------------------------------

    async def check(self, job_ids: Iterable[str], caller: Any) -> None:
        """Refuse inputs the caller may not use, or whose results are gone.

        Raises:
            JobNotFound: No such job, or another caller's.
            FailedPrecondition: An upstream succeeded, but its result is no
                longer held (released, expired, or never kept).
        """
        for job_id in job_ids:
            record = await self.get_job(job_id, caller)
            if record.state is not JobState.SUCCEEDED:
                continue  # unfinished: waited for; failed: the downstream fails saying so
            if record.result_available or self.held.holds(job_id):
                continue
            raise FailedPrecondition(
                f"job {job_id} is used as an input, but its result is no longer held "
                "(released, expired, or not kept): run it again",
                reason="UPSTREAM_RESULT_GONE",
                metadata={"job_id": job_id},
            )

    # -- holding -----------------------------------------------------------

    def hold(self, job_id: str, upstream: Iterable[str]) -> None:
        """``job_id`` is recorded and unfinished: keep its upstreams' results held."""
        for up in upstream:
            self._dependents.setdefault(up, set()).add(job_id)

    def let_go(self, job_id: str, upstream: Iterable[str]) -> None:
        """``job_id`` ended: its upstreams' results follow their own lifetimes again."""
        for up in upstream:
            users = self._dependents.get(up)
            if users is not None:
                users.discard(job_id)
                if not users:
                    del self._dependents[up]

    def in_use(self) -> set[str]:
        """The jobs whose results unfinished jobs use (the janitor keeps them)."""
        return set(self._dependents)

    async def release(self, job_id: str, caller: Any) -> tuple[JobRecord, bool]:
        """Free a job's result, unless unfinished jobs use it.

        Raises:
            JobNotFound: No such job, or another caller's.
            FailedPrecondition: Unfinished jobs use it (the message names them).
        """
        await self.get_job(job_id, caller)
        users = sorted(self._dependents.get(job_id, ()))
        if users:
            raise FailedPrecondition(
                f"the result of job {job_id} is an input of unfinished jobs "
                f"({', '.join(users)}); release it once they end",
                reason="RESULT_IN_USE",
                metadata={"job_id": job_id, "dependents": ",".join(users)},
            )
        return await self.held.release(job_id, caller)

    # -- before the downstream starts --------------------------------------

    async def work(self, job: Any) -> Any:
        """The work of an admitted job (:class:`server.admission.Admitted`) with
        its inputs in place, once they have all ended.

        Raises:
            UpstreamFailed: One did not succeed, or its result is gone.
        """
        results = await self.results(job.work.inputs, job.caller, job.scheduler)
        work, _ = await self.prepare(job.request, job.caller, job.scheduler, results)
        return work

    async def results(self, job_ids: Iterable[str], caller: Any, scheduler: str) -> dict[str, Any]:
        """Wait for each upstream's end, then what stands in for its result.

        Raises:
            UpstreamFailed: One did not succeed, or its result is gone.
        """
        ids = list(job_ids)
        waits = [asyncio.ensure_future(self.wait_job(i, None, caller)) for i in ids]
        try:
            for ended in asyncio.as_completed(waits):
                record, _ = await ended
                if record.state is not JobState.SUCCEEDED:  # no need to wait for the others
                    raise UpstreamFailed(_why(record))
        finally:
            for wait in waits:
                wait.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
        stand_ins = {}
        for job_id in ids:
            try:
                _, held = await self.held.handle(job_id, caller)
            except NotFound as exc:
                raise UpstreamFailed(f"the result of input job {job_id} is gone: {exc}") from None
            stand_ins[job_id] = await self._stand_in(held, scheduler)
        return stand_ins

    async def _stand_in(self, held: Any, scheduler: str) -> Any:
        if not isinstance(held, ClusterResult):
            if scheduler != "distributed":
                self.counted(scheduler, sizeof(held))
            return held  # held here (or kept with its record): small, or a local job's
        if scheduler != "distributed":
            value = await held.fetch(large=True)
            self.counted(scheduler, sizeof(value))
            return value
        return as_future(held)


def as_future(held: ClusterResult) -> Any:
    """One future whose value is the result, computed on the cluster where it is held."""
    futures = held.published()["futures"]
    if held.single_key is not None:
        while isinstance(futures, (list, tuple)):
            (futures,) = futures
        return futures
    client = _client(futures)
    shape = held.published()["shape"]
    if shape == "tuple":
        return client.submit(tuple, list(futures))
    if shape == "single":
        return client.submit(operator.getitem, list(futures), 0)
    return client.submit(operator.getitem, [futures], 0)


def bind_futures(shape: str, obj: Any, keys: Any) -> tuple[str, Any, Any]:
    """A loaded graph (as :func:`server._pickle.load_graph` shapes it) whose tasks
    depend on the futures found in their arguments.

    A task was built around the caller's reference (the SDK's ``Job``); the
    future loaded in its place is a plain argument to Dask until the task is
    built again around it, which makes it a dependency: the task then runs
    where the data is, with the value, and the data never leaves the cluster.
    """
    from dask._task_spec import convert_legacy_graph

    if shape == "graph":
        return shape, _bound(convert_legacy_graph(obj)), keys
    collections = (obj,) if shape == "collection" else obj
    rebuilt = []
    for collection in collections:
        graph = convert_legacy_graph(dict(collection.__dask_graph__()))
        bound = _bound(graph)
        if bound is graph:
            rebuilt.append(collection)
            continue
        rebuild, extra = collection.__dask_postpersist__()
        rebuilt.append(rebuild(bound, *extra))
    return shape, rebuilt[0] if shape == "collection" else tuple(rebuilt), keys


def _bound(graph: dict) -> dict:
    """``graph`` with each node that holds a future rebuilt around it (itself if none does)."""
    changed = {key: _rebuilt(node) for key, node in graph.items() if _has_future(node)}
    return {**graph, **changed} if changed else graph


def _is_future(value: Any) -> bool:
    from distributed import Future

    return isinstance(value, Future)


def _has_future(value: Any) -> bool:
    from dask._task_spec import DataNode, Task

    if _is_future(value):
        return True
    if isinstance(value, DataNode):
        return _has_future(value.value)
    if isinstance(value, Task):
        return any(_has_future(v) for v in (*value.args, *value.kwargs.values()))
    if isinstance(value, dict):
        return any(_has_future(v) for v in value.values())
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(_has_future(v) for v in value)
    return False


def _rebuilt(node: Any) -> Any:
    """A graph node holding futures, made again so that they are its dependencies."""
    from dask._task_spec import Alias, DataNode, List, Set, Task, Tuple, parse_input

    def arg(value: Any) -> Any:
        if not _has_future(value):
            return value
        if isinstance(value, Task):
            return _rebuilt(value)
        return parse_input(value)  # a future becomes an Alias of its key

    if isinstance(node, DataNode):
        if _is_future(node.value):
            return Alias(node.key, node.value.key)
        return Task(node.key, operator.getitem, arg([node.value]), 0)
    if type(node) in (List, Tuple, Set):
        return type(node)(*(arg(v) for v in node.args))
    if type(node) is Task:
        args = [arg(v) for v in node.args]
        kwargs = {k: arg(v) for k, v in node.kwargs.items()}
        return Task(node.key, node.func, *args, **kwargs)
    raise InvalidArgument(
        f"a job's result cannot be used inside a {type(node).__name__} node of a graph; "
        "pass it as an argument of a task (dask.delayed(f)(job))",
        field="graph",
        reason="INVALID_JOB_INPUT",
    )


def _client(futures: Any) -> Any:
    while isinstance(futures, (list, tuple)):
        futures = futures[0]
    return futures.client


def _why(record: JobRecord) -> str:
    if record.state is JobState.CANCELLED:
        return f"input job {record.job_id} was cancelled: {record.cancel_reason or 'cancelled'}"
    error = record.error
    detail = f"{error.type}: {error.message}" if error is not None else record.state.value
    return f"input job {record.job_id} failed: {detail}"
