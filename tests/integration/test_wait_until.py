"""The suite's one polling helper, :func:`tests.helpers.wait_until`, and its async twin."""

from __future__ import annotations

import asyncio

import pytest

from tests.helpers import async_wait_until, wait_until


def answers(*values):
    """A condition that answers ``values`` in turn; its calls are counted in ``.calls``."""
    remaining = list(values)

    def condition():
        condition.calls += 1
        return remaining.pop(0)

    condition.calls = 0
    return condition


def test_it_returns_the_first_true_value():
    condition = answers(0, None, "", 7, 8)
    assert wait_until(condition, timeout=10, interval=0) == 7
    assert condition.calls == 4


def test_on_timeout_it_names_what_was_awaited_and_the_last_value():
    with pytest.raises(AssertionError, match=r"after 0.01s waiting for the thing \(last: \[\]\)"):
        wait_until(list, timeout=0.01, interval=0, message="the thing")


def test_a_callable_message_is_asked_only_when_time_is_up():
    asked = []

    def message():
        asked.append(True)
        return "the log's tail: ..."

    assert wait_until(answers(False, True), timeout=10, interval=0, message=message)
    assert not asked
    with pytest.raises(AssertionError, match="waiting for the log's tail: ..."):
        wait_until(lambda: False, timeout=0.01, interval=0, message=message)
    assert asked == [True]


def test_without_a_message_it_names_the_condition():
    def the_cluster_is_up():
        return False

    with pytest.raises(AssertionError, match="waiting for .*the_cluster_is_up"):
        wait_until(the_cluster_is_up, timeout=0.01, interval=0)


def test_what_the_condition_raises_ends_the_wait():
    def exits():
        raise RuntimeError("the process exited")

    with pytest.raises(RuntimeError, match="the process exited"):
        wait_until(exits, timeout=10)


def test_the_async_twin_awaits_coroutine_conditions_and_plain_ones():
    async def main():
        values = iter([False, False, "done"])

        async def condition():
            return next(values)

        assert await async_wait_until(condition, timeout=10, interval=0) == "done"
        assert await async_wait_until(answers(0, 3), timeout=10, interval=0) == 3
        with pytest.raises(AssertionError, match="waiting for nothing"):
            await async_wait_until(lambda: None, timeout=0.01, interval=0, message="nothing")

    asyncio.run(main())
