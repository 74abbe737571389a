"""The local pools' gates and process pools on their own: no cluster, no server."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

import pytest

from server.errors import ResourceExhausted
from server.pools import Gate, Occupancy
from server.process_pools import ProcessPools


async def _settled() -> None:
    """Let the event loop run until nothing more can move."""
    for _ in range(5):
        await asyncio.sleep(0)


@pytest.mark.asyncio
async def test_one_caller_holds_at_most_its_share_and_others_still_get_in():
    gate = Gate("threads", size=4, share=0.5)
    for _ in range(2):
        await gate.enter("alice")
    third = asyncio.ensure_future(gate.enter("alice"))
    await _settled()
    assert not third.done(), "alice is at her share: her third call waits"
    await asyncio.wait_for(gate.enter("bob"), 1)  # bob is not held up behind her
    gate.leave("alice")
    await asyncio.wait_for(third, 1)
    assert gate.running == 3


@pytest.mark.asyncio
async def test_a_call_waits_for_a_place_and_gets_the_first_one_freed():
    gate = Gate("threads", size=1)
    await gate.enter("alice")
    waiting = asyncio.ensure_future(gate.enter("bob"))
    await _settled()
    assert not waiting.done()
    gate.leave("alice")
    await asyncio.wait_for(waiting, 1)
    assert gate.running == 1


@pytest.mark.asyncio
async def test_a_cancelled_waiter_takes_no_place():
    gate = Gate("threads", size=1)
    await gate.enter("alice")
    waiting = asyncio.ensure_future(gate.enter("bob"))
    await _settled()
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    gate.leave("alice")
    await asyncio.wait_for(gate.enter("carol"), 1)
    assert gate.running == 1


@pytest.mark.asyncio
async def test_an_abandoned_call_frees_its_place_and_past_the_bound_the_pool_refuses():
    gate = Gate("threads", size=1, max_abandoned=2)
    await gate.enter("alice")
    gate.abandon("alice")
    assert gate.running == 0 and gate.abandoned == 1
    gate.check()  # one abandoned call: the pool still takes jobs
    await asyncio.wait_for(gate.enter("bob"), 1)
    gate.abandon("bob")
    with pytest.raises(ResourceExhausted, match="2 calls of cancelled jobs.*max_abandoned_threads"):
        gate.check()
    gate.returned()
    gate.check()


@pytest.mark.asyncio
async def test_gate_call_holds_its_place_until_a_cancelled_call_returns():
    gate = Gate("threads", size=1, max_abandoned=1)
    occupancy = Occupancy("alice")
    release = threading.Event()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        call = asyncio.ensure_future(gate.call(pool, occupancy, release.wait, 10))
        for _ in range(200):
            if gate.running:
                break
            await asyncio.sleep(0.01)
        stopped = []
        occupancy.when_stopped(lambda: stopped.append(True))
        call.cancel()
        await asyncio.gather(call, return_exceptions=True)
        assert gate.abandoned == 1 and gate.running == 0, "its place is free, the call counted"
        assert not occupancy.stopped and not stopped, "the job's work has not stopped"
        release.set()
        for _ in range(200):
            if occupancy.stopped:
                break
            await asyncio.sleep(0.01)
    assert occupancy.stopped and stopped == [True]
    assert gate.abandoned == 0


@pytest.mark.asyncio
async def test_a_returning_call_hands_its_place_to_the_next_without_the_event_loop():
    """A busy pool's threads do not sit idle waiting for a turn of the loop:
    the next waiting call starts in the pool as the previous one returns."""
    gate = Gate("threads", size=1)
    release, second_ran = threading.Event(), threading.Event()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = asyncio.ensure_future(gate.call(pool, Occupancy("alice"), release.wait, 10))
        second = asyncio.ensure_future(gate.call(pool, Occupancy("bob"), second_ran.set))
        for _ in range(200):
            if gate.running:
                break
            await asyncio.sleep(0.01)
        await _settled()
        assert not second_ran.is_set(), "one place: the second call waits"
        release.set()
        # The event loop is held here (a blocking wait): the second call must
        # start all the same.
        assert second_ran.wait(5), "the second call waited for the event loop"
        await asyncio.wait_for(asyncio.gather(first, second), 5)
    assert gate.running == 0


@pytest.mark.asyncio
async def test_a_call_cancelled_while_waiting_never_runs_and_frees_nothing_it_did_not_hold():
    gate = Gate("threads", size=1)
    release, ran = threading.Event(), threading.Event()
    occupancy = Occupancy("bob")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = asyncio.ensure_future(gate.call(pool, Occupancy("alice"), release.wait, 10))
        waiting = asyncio.ensure_future(gate.call(pool, occupancy, ran.set))
        await _settled()
        assert not occupancy.stopped, "it counts from the moment it asks"
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        assert occupancy.stopped, "dropped before it started: its job holds nothing"
        assert gate.running == 1
        release.set()
        await asyncio.wait_for(first, 5)
    assert not ran.is_set() and gate.running == 0 and gate.abandoned == 0


class _FakePool:
    def __init__(self) -> None:
        self.ended = False
        self._processes: dict = {}

    def shutdown(self, wait: bool, cancel_futures: bool) -> None:
        self.ended = True


def test_a_process_pool_with_a_cancelled_job_is_retired_and_ended_once_no_live_job_runs():
    pools = ProcessPools(_FakePool)
    first = pools.current
    mine = pools.enter()
    theirs = pools.enter()
    pools.abandon(mine)
    assert pools.current is not first, "new jobs go to a fresh pool at once"
    assert not first.ended, "another caller's job still runs there"
    pools.leave(theirs)
    assert first.ended, "ended once nothing live runs there"
    alone = pools.enter()
    second = pools.current
    pools.abandon(alone)
    assert second.ended, "with nothing else there, ended at once"


@pytest.mark.asyncio
async def test_a_retired_pool_is_ended_off_the_loop_and_its_cancelled_calls_told_after():
    release = threading.Event()
    ending: list[_FakePool] = []

    def slow_end(pool: _FakePool) -> None:  # a process that takes its time to die
        ending.append(pool)
        release.wait(10)
        pool.ended = True

    pools = ProcessPools(_FakePool, end=slow_end)
    first = pools.enter()
    told: list[bool] = []
    pools.abandon(first, lambda: told.append(first.ended))
    # The loop is free while the pool ends, and nobody is told before it has.
    for _ in range(20):
        await asyncio.sleep(0.01)
    assert ending == [first] and not told
    release.set()
    for _ in range(200):
        if told:
            break
        await asyncio.sleep(0.01)
    assert told == [True], "told once the pool's processes were gone"
