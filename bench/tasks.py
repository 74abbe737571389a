"""Trivial work the benchmark sends; importable by the server and every worker."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def inc(x: int) -> int:
    """x + 1: a job that does nothing worth timing."""
    return x + 1
