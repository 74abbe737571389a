"""What the in-process server is waiting on, for the report of a test that failed.

A call that hangs on the shared in-process server says only DEADLINE_EXCEEDED;
its event loop is idle and a thread dump (py-spy) shows nothing. What it
waits on is a suspended coroutine: this lists the server's own coroutines,
each with the chain of coroutines it awaits and what the innermost awaits,
and the calls the executors have queued for the cluster but not sent.
"""

from __future__ import annotations

import gc
import pathlib
import types

SERVER = str(pathlib.Path(__file__).resolve().parent.parent / "server")


def _chain(coroutine: types.CoroutineType) -> str:
    frames = []
    current: object = coroutine
    while isinstance(current, types.CoroutineType) and current.cr_frame is not None:
        frames.append(current.cr_frame)
        current = current.cr_await
    links = " -> ".join(f"{f.f_code.co_name} ({f.f_code.co_filename}:{f.f_lineno})" for f in frames)
    # The innermost frame of the server's own code, and the innermost of all.
    own = [f for f in frames if f.f_code.co_filename.startswith(SERVER)][-1:]
    shown = own + [f for f in frames[-1:] if f not in own]
    where = "".join(
        f"\n    in {f.f_code.co_name}: "
        + ", ".join(f"{k}={v!r:.160}" for k, v in f.f_locals.items())
        for f in shown
    )
    return f"{links} -> awaits {current!r:.300}{where}"


def suspended_server_coroutines() -> str:
    """The server's suspended coroutines that no other one of its own awaits, and queued calls."""
    coroutines, queues = [], []
    for o in gc.get_objects():
        if isinstance(o, types.CoroutineType):
            if o.cr_frame is not None and o.cr_frame.f_code.co_filename.startswith(SERVER):
                coroutines.append(o)
        elif type(o).__name__ == "Executors" and hasattr(o, "_pending_calls"):
            queues.append(f"Executors with {len(o._pending_calls)} call(s) queued for the cluster")
    awaited = {id(c.cr_await) for c in coroutines}
    lines = [_chain(c) for c in coroutines if id(c) not in awaited] + queues
    return "\n".join(lines) or "(none)"
