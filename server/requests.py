"""What a caller asks to run, and how a request becomes work.

:class:`JobRequest` is the plain form of a job request, whatever brought it
(a call, a batch, a stored request re-run after a restart). :class:`Preparer`
turns one into :class:`server.execution.Work`: it binds a named function's
arguments, or loads a pickled call or graph (which runs the caller's code, so
it is only ever called by :mod:`server.admission` after the permission check),
with uploaded objects put in place of their markers. Other jobs' results are
put in place once they are known (:mod:`server.dependencies`): until then the
work lists them in ``Work.inputs``.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from server import _pickle, dependencies, objects
from server.auth import Caller
from server.errors import InvalidArgument
from server.execution import Work
from server.jobs import JobKind
from server.registry import Registry

#: Payloads smaller than this are unpickled on the event loop; larger ones in a thread.
INLINE_LOAD_LIMIT = 64 * 1024


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
        object_ids: Uploaded objects the payload refers to.
        job_ids: Jobs whose results the payload uses (:mod:`server.dependencies`).
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
    job_ids: tuple[str, ...] = ()


def request_doc(request: JobRequest) -> dict[str, Any]:
    """A JSON-safe form of a request, to store with a retryable job."""
    doc = dataclasses.asdict(request)
    doc["kind"] = request.kind.value
    doc["payload"] = base64.b64encode(request.payload).decode("ascii")
    doc["args"] = list(request.args)
    doc["kwargs"] = dict(request.kwargs)
    doc["object_ids"] = list(request.object_ids)
    doc["job_ids"] = list(request.job_ids)
    return doc


def request_from_doc(doc: dict[str, Any]) -> JobRequest:
    """The request :func:`request_doc` stored."""
    values = dict(doc)
    values["kind"] = JobKind(values["kind"])
    values["payload"] = base64.b64decode(values["payload"])
    values["object_ids"] = tuple(values.get("object_ids", ()))
    values["job_ids"] = tuple(values.get("job_ids", ()))
    return JobRequest(**values)


#: ``(caller, object ids, scheduler) -> {id: what stands in for it}``.
ObjectResolver = Callable[[Caller, set[str], str], Awaitable[dict[str, Any]]]


class Preparer:
    """Turns requests into work; see the module docstring.

    Args:
        registry: The named functions offered.
        resolve_objects: What stands in for held objects in a job.
        in_thread: Runs a blocking call of the service's off the event loop (its own pool).
    """

    def __init__(
        self,
        registry: Registry,
        resolve_objects: ObjectResolver,
        in_thread: Callable[..., Awaitable[Any]],
    ) -> None:
        self.registry = registry
        self.resolve_objects = resolve_objects
        self.in_thread = in_thread

    async def prepare(
        self,
        request: JobRequest,
        caller: Caller,
        scheduler: str,
        inputs: Mapping[str, Any] | None = None,
    ) -> tuple[Work, str]:
        """The work of ``request`` and its target's name.

        ``inputs``: what stands in for each job the request uses (see
        :mod:`server.dependencies`); without them, the work lists those jobs
        in ``Work.inputs``, and a pickle gets placeholders in their place.

        Raises:
            FunctionNotFound: No such named function.
            InvalidArgument: Arguments the function cannot take, no work at all,
                or a payload that cannot be loaded.
        """
        held: dict[str, Any] | None
        if request.kind is JobKind.FUNCTION:
            spec = self.registry.get(request.function)
            args, kwargs = spec.bind(request.args, request.kwargs)
            ids = objects.json_marker_ids([args, kwargs])
            if ids:
                held = await self.resolve_objects(caller, ids, scheduler)
                args = objects.replace_json_markers(args, held)
                kwargs = objects.replace_json_markers(kwargs, held)
            jobs = tuple(dependencies.json_marker_ids([args, kwargs]))
            if jobs and inputs is not None:
                args = dependencies.replace_json_markers(args, dict(inputs))
                kwargs = dependencies.replace_json_markers(kwargs, dict(inputs))
                jobs = ()
            work = Work(call=(spec.func, tuple(args), kwargs), lazy=spec.lazy, inputs=jobs)
            return work, spec.name
        held = None
        if request.object_ids:
            ids = {objects.check_object_id(i) for i in request.object_ids}
            # A Dask graph was built around a placeholder: a cluster future put
            # there when it is loaded would not be a dependency of its tasks, so
            # graphs get the values (fetched from the cluster) on every scheduler.
            by_value = request.kind is JobKind.GRAPH
            held = await self.resolve_objects(caller, ids, "local" if by_value else scheduler)
        jobs = tuple(dict.fromkeys(request.job_ids))
        if jobs:
            stand_ins = (
                inputs if inputs is not None else {i: dependencies.JobInput(i) for i in jobs}
            )
            prefix = dependencies.PERSISTENT_ID_PREFIX
            held = {**(held or {}), **{prefix + i: stand_ins[i] for i in jobs}}
        waiting = jobs if inputs is None else ()
        if request.kind is JobKind.PICKLED_CALL:
            func, args, kwargs = await self._load(_pickle.load_call, request.payload, held)
            work = Work(call=(func, args, kwargs), inputs=waiting)
            return work, _pickle.describe_callable(func)
        if request.kind is JobKind.GRAPH:
            shape, obj, keys = await self._load(_pickle.load_graph, request.payload, held)
            if jobs and inputs is not None and scheduler == "distributed":
                # The futures put in place become dependencies of the tasks using them.
                shape, obj, keys = dependencies.bind_futures(shape, obj, keys)
            if shape == "graph":
                return Work(graph=obj, keys=keys, inputs=waiting), "graph"
            if shape == "collection":
                return Work(collections=(obj,), single=True, inputs=waiting), "graph"
            return Work(collections=obj, inputs=waiting), "graph"
        raise InvalidArgument(
            "the job carries no work: set call, pickled_call or graph",
            field="work",
            reason="NO_WORK",
        )

    async def _load(self, loader: Any, payload: bytes, held: dict[str, Any] | None) -> Any:
        # Whatever loading raises (its code's sys.exit() included) comes out
        # as InvalidPayload: the rule of server.job_errors.load_error.
        if len(payload) < INLINE_LOAD_LIMIT:
            return loader(payload, held)
        return await self.in_thread(loader, payload, held)
