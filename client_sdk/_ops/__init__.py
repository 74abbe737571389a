"""What the SDK does, written once for both clients ("sans-I/O").

Every operation is a generator that yields the call it needs made and is
sent the response (or has the call's exception thrown into it); the protocol
is in :mod:`client_sdk._sansio`. Operations build requests and read responses
through :mod:`client_sdk._convert` and never touch a channel.
:class:`client_sdk.ComputeClient` drives them with blocking calls and
:class:`client_sdk.AsyncComputeClient` with ``await``. This is the pattern of
h11 and other sans-I/O protocol libraries: one copy of the logic, two thin
drivers.

One module per concern, each adding its operations to :class:`ClientBase`:

- :mod:`~client_sdk._ops.base`: the client's settings, what it learned of the
  server (``info``, the version check) and the hooks each client fills in;
- :mod:`~client_sdk._ops.runs`: ``run``, ``compute`` and ``get``, one ``Run`` each;
- :mod:`~client_sdk._ops.jobs`: submitting jobs, and acting on one by id;
- :mod:`~client_sdk._ops.results`: a finished job's result, streamed or not;
- :mod:`~client_sdk._ops.objects`: ``scatter`` and ``delete_object``;
- :mod:`~client_sdk._ops.paging`: ``list_jobs``, page by page;
- :mod:`~client_sdk._ops.waiting`: ``WaitJob``/``WaitJobs`` long polls that settle jobs;
- :mod:`~client_sdk._ops.watching`: ``WatchJob`` streams of a job's progress.

The operations a job runs on its own (its record, cancelling it, its result)
need nothing of the client and are plain functions of those modules.
"""

from __future__ import annotations

from client_sdk._ops.jobs import Jobs
from client_sdk._ops.objects import Objects
from client_sdk._ops.paging import Paging
from client_sdk._ops.results import RESULT_STREAM_ATTEMPTS
from client_sdk._ops.runs import Runs
from client_sdk._ops.waiting import Waiting
from client_sdk._ops.watching import Watching

# What the clients take from here; RESULT_STREAM_ATTEMPTS goes with Watching's rules.
__all__ = ["RESULT_STREAM_ATTEMPTS", "ClientBase", "Watching"]


class ClientBase(Runs, Jobs, Objects, Waiting, Paging):
    """State and operations both clients share.

    Takes the arguments documented on :class:`client_sdk.ComputeClient`, then
    calls :meth:`_open` for the subclass to open its channel.

    Raises:
        ValueError: A malformed target, timeout or token.
    """
