"""Running work and waiting for its value in one call: ``run``, ``compute`` and ``get``.

Each sends one ``Run`` whose deadline is the caller's timeout: the server
answers when the job finishes (cancelling it when the deadline passes) and
frees its copy of the result once sent, so no job handle is left behind.
"""

from __future__ import annotations

import logging
from typing import Any

from client_sdk import _convert, _dask
from client_sdk._ops import results
from client_sdk._ops.base import Session
from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk._sansio import Call, Op
from client_sdk.errors import DeadlineExceeded, JobTimeout

logger = logging.getLogger(__name__)

#: Deadline of ``run`` and ``compute`` given no ``timeout``, in seconds (one day).
MAX_RUN_WAIT = 24 * 3600.0


class Runs(Session):
    """The operations that run a job and return its value."""

    def _run_spec(
        self, spec: pb.JobSpec, timeout: float | None, what: str, job_name: str | None
    ) -> Op[Any]:
        # run() returns only the value: the server frees its copy once sent.
        # Its timeout is the call's deadline: when it passes the server cancels
        # the job, and its record says so ("the deadline of the Run call passed").
        _convert.job_options(spec, job_name, None)
        call = Call("Run", pb.RunRequest(job=spec, release=True), timeout or MAX_RUN_WAIT)
        try:
            response = yield call
        except DeadlineExceeded as exc:
            raise JobTimeout(
                f"{what} did not finish within {call.timeout:g}s; the server cancelled it"
            ) from exc
        result = response.result if response.HasField("result") else None
        if (
            response.job.state == pb.JOB_STATE_SUCCEEDED
            and result is not None
            and not result.streamed
        ):
            return _convert.value(result)  # the common case, without the record's conversion
        info = _convert.job_info(response.job)
        value, error = yield from results.settled(info, result, release=True, trusted=True)
        if error is not None:
            raise error
        return value

    def run(
        self,
        # self positional-only, so that blocking() and coroutine() keep these
        # parameters in the clients' types (kwargs may hold any name).
        /,
        function: str,
        *args: Any,
        scheduler: str | None = None,
        timeout: float | None = None,
        job_name: str | None = None,
        **kwargs: Any,
    ) -> Op[Any]:
        """Call a named function with JSON arguments and wait for its value.

        Args:
            function: The function's name, as :meth:`functions` lists it.
            *args: Positional arguments (JSON values).
            scheduler: "distributed", "threads", "processes" or "synchronous";
                ``None`` is the server's default.
            timeout: Seconds to wait; the job is cancelled when they pass.
                ``None`` waits up to :data:`MAX_RUN_WAIT` (use :meth:`submit`
                for longer jobs).
            job_name: A label for the job's record (``jobs`` lists it), at
                most 256 characters.
            **kwargs: Keyword arguments (JSON values).

        Returns:
            The function's value, with its Python type (tuples stay tuples).

        Raises:
            FunctionNotFound: No such function.
            InvalidArguments: Arguments that do not fit its signature.
            JobTimeout: ``timeout`` passed first.
            Exception: Whatever the function raised.
        """
        spec = _convert.function_call_spec(function, args, kwargs, scheduler)
        return (yield from self._run_spec(spec, timeout, f"{function}()", job_name))

    def compute(
        self,
        *args: Any,
        scheduler: str | None = None,
        timeout: float | None = None,
        traverse: bool = True,
        job_name: str | None = None,
    ) -> Op[Any]:
        """Compute Dask collections on the service, as ``dask.compute(*args)`` does locally.

        Args:
            *args: Dask collections (arrays, bags, dataframes, delayed), plain
                values, and with ``traverse`` lists, tuples and dicts of them.
            scheduler: The service's scheduler: "distributed", "threads",
                "processes" or "synchronous"; ``None`` is the server's default.
            timeout: Seconds to wait; the computation is cancelled when they
                pass. ``None`` waits up to :data:`MAX_RUN_WAIT`.
            traverse: Look for collections inside lists, tuples and dicts.
            job_name: A label for the job's record, at most 256 characters.

        Returns:
            A tuple with one computed value per argument, as ``dask.compute``.

        Raises:
            VersionMismatch: This side cannot send pickled work to the server.
            JobTimeout: ``timeout`` passed first.
            Exception: Whatever a task raised.
        """
        collections, repack = _dask.unpack(args, traverse)
        if not collections:
            return repack(())
        yield from self._check_versions()
        spec = _convert.graph_spec(collections, scheduler)
        return repack((yield from self._run_spec(spec, timeout, "compute", job_name)))

    def get(
        self,
        /,
        dsk: Any,
        keys: Any,
        *,
        scheduler: str | None = None,
        timeout: float | None = None,
        job_name: str | None = None,
        **kwargs: Any,
    ) -> Op[Any]:
        """Compute ``keys`` of a task graph on the service: a Dask scheduler function.

        ``x.compute(scheduler=client.get)`` computes ``x`` here, as
        ``x.compute(scheduler=dask.threaded.get)`` would locally. The service
        gives each job's graph keys of its own on the cluster, so two jobs
        that both name a key "x" never see each other's data.

        Args:
            dsk: A task graph (dict or ``HighLevelGraph``) or the expression
                modern Dask passes to schedulers.
            keys: A key or a (nested) list of keys.
            scheduler: The service's scheduler; ``None`` is the server's default.
            timeout: Seconds to wait, as in :meth:`compute`.
            job_name: A label for the job's record, at most 256 characters.
            **kwargs: Other scheduler options Dask passes; ignored.

        Returns:
            The values of ``keys``, shaped like ``keys``.
        """
        yield from self._check_versions()
        spec = _convert.graph_spec((_dask.graph(dsk), keys), scheduler)
        return (yield from self._run_spec(spec, timeout, "get", job_name))
