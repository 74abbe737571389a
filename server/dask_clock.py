"""Dask's timers on the monotonic clock: a step of the wall clock cannot stall the cluster.

Tornado's ``IOLoop.time()`` is ``time.time()``, and Dask's batched streams
(:class:`distributed.batched.BatchedSend`, which carry a client's
submissions, the scheduler's instructions and a worker's "task finished")
set their next write at a wall-clock deadline that tornado turns back into
a delay with a second reading of the wall clock. When the clock steps back
between the two readings (NTP stepping it, a virtual machine resumed from
a pause), the delay becomes the size of the step: with an hour's step, each
stream holds its messages for an hour, and so does every periodic callback
(heartbeats included). The server was seen waiting like that, its job's
task never sent to the scheduler.

:func:`use_monotonic_clock` puts both on ``time.monotonic()``, which never
steps. It must run before the process starts any tornado periodic callback
(a deadline set on one clock is not read on the other), so importing this
module runs it: the server process imports it with :mod:`server.cluster`,
before any cluster exists, and each worker of a LocalCluster the server
starts imports it as its Dask preload (:data:`WORKER_PRELOAD`), before the
worker starts its own callbacks.
"""

from __future__ import annotations

import time

#: The preload that puts a LocalCluster worker process on the monotonic clock.
WORKER_PRELOAD = __name__


def _monotonic(self: object) -> float:
    return time.monotonic()


def use_monotonic_clock() -> None:
    """Put tornado's IOLoop clock and Dask's batched streams on ``time.monotonic()`` (idempotent)."""
    import distributed.batched
    import tornado.ioloop

    tornado.ioloop.IOLoop.time = _monotonic  # type: ignore[method-assign]
    distributed.batched.time = time.monotonic


use_monotonic_clock()
