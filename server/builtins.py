"""Named functions every server offers: smoke tests and demos.

``fib`` is pure Python and CPU bound, so it shows why ``processes`` beats
``threads`` for work that holds the GIL; ``pi`` is a ``dask.array`` Monte Carlo
estimate that the job's scheduler computes chunk by chunk.

Built-ins bound what they allocate inside the server: a call past a bound is
refused with INVALID_ARGUMENT before it is accepted (``pi``'s chunk size, which
is what one of its tasks holds in memory at once, is the one that matters).
"""

from __future__ import annotations

from server import cancellation
from server.registry import Registry

#: The built-in functions.
builtins = Registry()


@builtins.function
def ping() -> str:
    """Return "pong": the cheapest job there is, for checking the service."""
    return "pong"


@builtins.function
def add(a: float, b: float) -> float:
    """Return a + b."""
    return a + b


@builtins.function
def sleep(seconds: float) -> float:
    """Sleep for ``seconds`` (at most one hour) and return it.

    A cancelled (or timed-out) job's sleep stops within 50 ms, freeing the
    thread it held (:mod:`server.cancellation`); nobody reads its result then.
    """
    if not 0 <= seconds <= 3600:
        raise ValueError(f"seconds must be between 0 and 3600, got {seconds}")
    if not cancellation.sleep(seconds):
        raise JobCancelledWhileSleeping(f"cancelled during sleep({seconds})")
    return seconds


class JobCancelledWhileSleeping(Exception):
    """The built-in ``sleep`` stopped early: its job was cancelled (no caller sees this)."""


#: Largest ``pi`` chunk: a chunk of n points holds about 41 bytes a point at once
#: (the points, their squares, the sums and the mask), so 1,000,000 is ~41 MB a task.
PI_MAX_CHUNK = 1_000_000
#: Most ``pi`` chunks (tasks) of one call.
PI_MAX_CHUNKS = 10_000


def _pi_bounds(samples: int, chunks: int, seed: int | None) -> None:
    if chunks > PI_MAX_CHUNK:
        raise ValueError(
            f"chunks must be at most {PI_MAX_CHUNK:,} (each chunk is held in memory at once), "
            f"got {chunks:,}"
        )
    if samples > PI_MAX_CHUNK * PI_MAX_CHUNKS:
        raise ValueError(
            f"samples must be at most {PI_MAX_CHUNK * PI_MAX_CHUNKS:,} "
            f"({PI_MAX_CHUNKS:,} chunks of at most {PI_MAX_CHUNK:,}), got {samples:,}"
        )
    if chunks >= 1 and samples // chunks > PI_MAX_CHUNKS:
        raise ValueError(
            f"at most {PI_MAX_CHUNKS:,} chunks: {samples:,} samples in chunks of {chunks:,} "
            f"would be {samples // chunks:,}; raise chunks or lower samples"
        )


@builtins.function(lazy=True, check=_pi_bounds)
def pi(samples: int = 1_000_000, chunks: int = 100_000, seed: int | None = None) -> float:
    """Estimate pi by Monte Carlo on a dask.array of ``samples`` points in ``chunks``-sized chunks.

    The array is computed by the job's scheduler, one task per chunk; ``chunks``
    is at most 1,000,000 and there are at most 10,000 chunks.
    """
    import dask.array as da

    if samples < 1 or chunks < 1:
        raise ValueError("samples and chunks must be at least 1")
    if samples // chunks > PI_MAX_CHUNKS:
        raise ValueError("at most 10,000 chunks: raise chunks or lower samples")
    rng = da.random.default_rng(seed)
    xy = rng.random((samples, 2), chunks=(chunks, 2))
    inside = ((xy**2).sum(axis=1) <= 1.0).sum()
    return 4.0 * inside / samples


@builtins.function
def fib(n: int) -> int:
    """Return the n-th Fibonacci number, computed naively in pure Python (CPU bound; n <= 40)."""
    if not 0 <= n <= 40:
        raise ValueError(f"n must be between 0 and 40, got {n}")
    return n if n < 2 else _fib(n - 1) + _fib(n - 2)


def _fib(n: int) -> int:
    return n if n < 2 else _fib(n - 1) + _fib(n - 2)
