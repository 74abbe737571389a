"""Jobs left unfinished: after a restart, and those of a replica that stopped.

:class:`Recovery` settles them. A retryable job whose request was kept runs
again from the start, under the same id, if it passes the one gate
(:meth:`server.admission.Admission.readmit`) with its owner's *current*
permissions and the server's *current* policy: a pickled job whose owner
lost ``code``, or a server restarted with ``--no-pickled-work``, is not
loaded. Every other orphan ends FAILED with a reason that says why.

After a restart it also makes the records say what is really there: a
succeeded job's result that was not stored with its record (larger than
``--stored-result-bytes``, or the server was killed in the moment before a
small one is stored) was held only by the process that stopped, and its
record says so (``result_available`` false, and why, for GetJobResult).

On a shared store its writes are fenced by the lease like every other: an
orphan that yet another replica adopted meanwhile is left to it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from server.admission import Admission
from server.errors import JobNotFound
from server.execution import Executors
from server.jobs import JobError, JobRecord, JobState, JobTable
from server.requests import request_from_doc
from server.runner import Runner

logger = logging.getLogger(__name__)

#: Why a result held only by the server's process is gone after a restart.
LOST_IN_RESTART = (
    "the service restarted since the job succeeded, and its result was held only by the "
    "server's process or its cluster (results larger than --stored-result-bytes are not "
    "kept with their records, and a small one is kept a moment after its job ends): run "
    "the job again"
)


class Recovery:
    """See the module docstring.

    Args:
        store: The job records (and the requests kept with retryable ones).
        admission: The gate re-run jobs pass again.
        runner: Starts the jobs that may run again.
        pools: The core's pools.
    """

    def __init__(
        self,
        store: JobTable,
        admission: Admission,
        runner: Runner,
        pools: Callable[[], Executors],
    ) -> None:
        self.store = store
        self.admission = admission
        self.runner = runner
        self.pools = pools

    async def after_restart(self) -> None:
        """Settle the jobs an earlier run of this server left unfinished, and mark the
        results it held only in its process gone."""
        lost = await self.store.lose_unstored_results(LOST_IN_RESTART)
        if lost:
            logger.warning(
                "%d results were held only by the server's process when it last stopped "
                "(not stored with their records): their records now say they are gone",
                len(lost),
            )
        orphans = await self.store.unfinished()
        rerun = await self.settle(orphans, "service restarted", "ServiceRestarted")
        if orphans:
            logger.warning(
                "%d jobs were unfinished when the service last stopped: %d re-run, "
                "%d marked failed (service restarted)",
                len(orphans),
                rerun,
                len(orphans) - rerun,
            )

    async def settle(self, orphans: list[JobRecord], why: str, error_type: str) -> int:
        """Re-run the orphans that may run again (under the same id); fail the others,
        saying ``why`` (and why a retryable one could not run again).

        Returns:
            How many were re-run.
        """
        executors = self.pools()
        rerun = 0
        for record in orphans:
            doc = await self.store.request_of(record.job_id) if record.retryable else None
            reason = why
            if doc is not None:
                try:
                    admitted = await self.admission.readmit(record.owner, request_from_doc(doc))
                except Exception as exc:  # e.g. the owner lost 'code', or the function is gone
                    reason = f"{why}, and the job could not be re-run: {exc}"
                    logger.warning("job=%s not re-run: %s", record.job_id, exc)
                else:
                    try:
                        record = await self.store.update(
                            record.job_id, state=JobState.QUEUED, start_time=None
                        )
                    except JobNotFound as exc:  # another replica adopted it meanwhile, or gone
                        logger.warning("job=%s not re-run here: %s", record.job_id, exc)
                        continue
                    if not record.state.finished:
                        self.admission.reserve(record)
                        self.admission.recorded(record.job_id)
                        self.runner.start(executors, record, admitted)
                        rerun += 1
                    continue
            try:
                await self.store.update(
                    record.job_id,
                    state=JobState.FAILED,
                    finish_time=time.time(),
                    error=JobError(type=error_type, message=reason),
                )
            except JobNotFound as exc:  # another replica adopted it meanwhile, or gone
                logger.warning("job=%s not settled here: %s", record.job_id, exc)
        return rerun
