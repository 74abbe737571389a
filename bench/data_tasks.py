"""The data and chain sections' work (:mod:`bench.data`, :mod:`bench.chain`); importable by
the server and every worker."""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)


def make_array(nbytes: int) -> np.ndarray:
    """``0, 1, 2, ...`` as int64: an array of ``nbytes`` bytes whose content is easy to check."""
    return np.arange(nbytes // 8, dtype=np.int64)


def expected_sum(nbytes: int) -> int:
    """The sum of :func:`make_array` of ``nbytes``."""
    n = nbytes // 8
    return n * (n - 1) // 2


def total(array: np.ndarray) -> int:
    """The array's sum, as a Python int: a job that reads every byte of its argument."""
    return int(array.sum())


def step(array: np.ndarray) -> np.ndarray:
    """A new array of the same size, each element one more: a chain's step (:mod:`bench.chain`)."""
    return array + 1
