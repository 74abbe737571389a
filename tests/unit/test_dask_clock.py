"""A step back of the wall clock does not stall Dask's batched streams or tornado's timers."""

from __future__ import annotations

import asyncio
import time

import distributed.batched
import pytest
import tornado.ioloop
import tornado.locks

from server import dask_clock


def test_a_batched_stream_deadline_passes_on_time_though_the_wall_clock_steps_back_an_hour(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dask_clock.use_monotonic_clock()
    wall = time.time
    stepped = {"by": 0.0}
    monkeypatch.setattr(time, "time", lambda: wall() - stepped["by"])

    async def wait_as_a_batched_stream_does() -> float:
        waker = tornado.locks.Event()
        # BatchedSend: next_deadline = time() + interval, then waker.wait(next_deadline);
        # here the clock steps back between the two readings.
        deadline = distributed.batched.time() + 0.01
        stepped["by"] = 3600.0
        started = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            # tornado's TimeoutError at the deadline; wait_for's at 5 s if the deadline stalls
            await asyncio.wait_for(waker.wait(deadline), 5)
        return time.monotonic() - started

    took = asyncio.run(wait_as_a_batched_stream_does())
    assert took < 1.0, f"the 10 ms deadline passed after {took:.1f} s"


def test_the_io_loop_and_the_batched_streams_read_the_same_monotonic_clock() -> None:
    dask_clock.use_monotonic_clock()

    async def readings() -> tuple[float, float, float]:
        return tornado.ioloop.IOLoop.current().time(), distributed.batched.time(), time.monotonic()

    loop_time, batched_time, monotonic = asyncio.run(readings())
    assert abs(loop_time - monotonic) < 1 and abs(batched_time - monotonic) < 1
