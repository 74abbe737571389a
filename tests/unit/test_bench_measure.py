"""bench.measure.interleaved: each call timed as often as asked, in alternating rounds."""

from __future__ import annotations

from bench import measure


def test_interleaved_alternates_rounds_and_times_each_call_as_asked() -> None:
    order: list[str] = []
    calls = {name: (lambda n=name: order.append(n)) for name in ("a", "b")}
    timed = measure.interleaved(calls, per_call=7, rounds=3, warmup=2)
    assert {name: len(lat.samples) for name, lat in timed.items()} == {"a": 7, "b": 7}
    assert order[:4] == ["a", "a", "b", "b"], "warm-up first"
    rounds = order[4:]
    assert rounds == ["a"] * 3 + ["b"] * 3 + ["a"] * 2 + ["b"] * 2 + ["a"] * 2 + ["b"] * 2
    assert all(t >= 0 for lat in timed.values() for t in lat.samples)
