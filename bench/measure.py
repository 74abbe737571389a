"""Timing helpers and the benchmark's measurements, each one side by side.

Every function returns plain numbers; the section modules turn them into rows.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import statistics
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Latency:
    """Round-trip times of sequential or concurrent calls, in seconds."""

    samples: tuple[float, ...]
    errors: int = 0
    elapsed: float = 0.0

    @property
    def p50(self) -> float:
        """The median."""
        return statistics.median(self.samples) if self.samples else float("nan")

    @property
    def p99(self) -> float:
        """The 99th percentile (nearest rank)."""
        if not self.samples:
            return float("nan")
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, max(0, round(0.99 * len(ordered)) - 1))]

    @property
    def rate(self) -> float:
        """Calls per second over the whole run (concurrent runs)."""
        return len(self.samples) / self.elapsed if self.elapsed else float("nan")


def sequential(call: Callable[[], Any], calls: int, warmup: int = 20) -> Latency:
    """Time ``calls`` calls one after another, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call()
    samples = []
    clock = time.perf_counter
    for _ in range(calls):
        start = clock()
        call()
        samples.append(clock() - start)
    return Latency(tuple(samples))


def interleaved(
    calls: dict[str, Callable[[], Any]], per_call: int, rounds: int = 5, warmup: int = 20
) -> dict[str, Latency]:
    """Time each of ``calls`` ``per_call`` times, in ``rounds`` alternating rounds.

    Figures to be compared as a ratio are taken this way, under the same
    conditions: whatever else the machine does in the meantime weighs on each
    of them alike, where back-to-back runs would each get a different share.
    """
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():
        for _ in range(warmup):
            call()
    clock = time.perf_counter
    for round_number in range(rounds):
        share = per_call // rounds + (round_number < per_call % rounds)
        for name, call in calls.items():
            mine = samples[name]
            for _ in range(share):
                start = clock()
                call()
                mine.append(clock() - start)
    return {name: Latency(tuple(times)) for name, times in samples.items()}


def threaded(call: Callable[[], Any], callers: int, per_caller: int) -> Latency:
    """``callers`` threads each making ``per_caller`` calls at once; failures are counted."""
    samples: list[float] = []
    errors = [0]
    lock = threading.Lock()
    barrier = threading.Barrier(callers + 1)

    def caller() -> None:
        mine, failed = [], 0
        barrier.wait()
        for _ in range(per_caller):
            start = time.perf_counter()
            try:
                call()
            except Exception:
                failed += 1
                continue
            mine.append(time.perf_counter() - start)
        with lock:
            samples.extend(mine)
            errors[0] += failed

    threads = [threading.Thread(target=caller) for _ in range(callers)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    return Latency(tuple(samples), errors[0], time.perf_counter() - start)


async def concurrent(call: Callable[[], Awaitable[Any]], callers: int, per_caller: int) -> Latency:
    """``callers`` asyncio tasks each making ``per_caller`` calls at once."""
    samples: list[float] = []
    errors = 0

    async def caller() -> None:
        nonlocal errors
        for _ in range(per_caller):
            start = time.perf_counter()
            try:
                await call()
            except Exception:
                errors += 1
                continue
            samples.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    return Latency(tuple(samples), errors, time.perf_counter() - start)


def batch(submit_and_gather: Callable[[int], list[Any]], n: int) -> float:
    """Calls per second of one ``map`` of ``n`` trivial calls plus its ``gather``."""
    start = time.perf_counter()
    values = submit_and_gather(n)
    elapsed = time.perf_counter() - start
    if values != list(range(1, n + 1)):
        raise AssertionError("the batch computed wrong values")
    return n / elapsed


def best_of(run: Callable[[], Any], repeats: int) -> float:
    """The fastest of ``repeats`` runs, in seconds (the least disturbed by other load)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def array_reduction(size: int, chunk: int) -> Any:
    """The Dask array reduction every scheduler computes: a mean of a matrix product."""
    import dask.array as da

    x = da.random.default_rng(0).random((size, size), chunks=(chunk, chunk))
    return (x @ x.T).mean()
