"""Built-ins bound what they allocate: a call past a bound is refused before it runs."""

from __future__ import annotations

import pytest

from server.builtins import builtins
from server.errors import InvalidArgument


def test_pi_with_a_huge_chunk_is_refused_naming_the_bound():
    pi = builtins.get("pi")
    with pytest.raises(InvalidArgument, match=r"chunks must be at most 1,000,000"):
        pi.bind([], {"samples": 4e8, "chunks": 4e8})


def test_pi_with_too_many_samples_is_refused_naming_the_bound():
    pi = builtins.get("pi")
    with pytest.raises(InvalidArgument, match=r"samples must be at most 10,000,000,000"):
        pi.bind([], {"samples": 10**11})


def test_pi_within_its_bounds_binds():
    pi = builtins.get("pi")
    assert pi.bind([], {"samples": 4e8, "chunks": 1e6}) == (
        [],
        {"samples": 400_000_000, "chunks": 1_000_000},
    )
    assert pi.bind([], {}) == ([], {})
