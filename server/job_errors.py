"""The one rule for exceptions raised by a job's code.

(Interim: moved here from the core as it was split; the rule for every
boundary lands with the errors work.)
"""

from __future__ import annotations

from typing import Any

from server import _pickle
from server.jobs import JobError


async def contain(work: Any) -> Any:
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


def to_job_error(exc: BaseException) -> JobError:
    """The :class:`JobError` a job's exception is recorded as."""
    traceback_text = getattr(exc, "__dask_compute_traceback__", None) or _pickle.format_traceback(
        exc
    )
    return JobError(
        type=_pickle.exception_type_name(exc),
        message=str(exc),
        traceback=traceback_text,
        pickled_exception=_pickle.dump_exception(exc),
    )
