"""RefusalLog: one line per peer address per interval, the next saying how many more."""

from __future__ import annotations

import logging

from server.errors import Unauthenticated
from server.interceptors import RefusalLog


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def refuse(log: RefusalLog, peer: str, times: int) -> int:
    return sum(
        log.refused("/compute.v1.ComputeService/Run", peer, Unauthenticated("no token"))
        for _ in range(times)
    )


def test_one_line_per_peer_per_interval_then_the_count(caplog):
    caplog.set_level(logging.INFO, logger="server.interceptors")
    clock = Clock()
    log = RefusalLog(interval=10.0, clock=clock)
    assert refuse(log, "ipv4:10.0.0.1:40000", 1) == 1
    # Other ports of the same address are the same peer.
    assert refuse(log, "ipv4:10.0.0.1:40001", 499) == 0
    assert refuse(log, "ipv4:10.0.0.2:40000", 1) == 1  # another address has its own line
    clock.now += 10.0
    assert refuse(log, "ipv4:10.0.0.1:40002", 1) == 1
    lines = [r.getMessage() for r in caplog.records if r.name == "server.interceptors"]
    assert len(lines) == 3
    assert "and 499 more refused calls from ipv4:10.0.0.1" in lines[2]
    assert "no token" in lines[0] and "more refused" not in lines[0]


def test_a_flood_of_addresses_shares_one_entry_past_the_table_size(caplog):
    caplog.set_level(logging.INFO, logger="server.interceptors")
    log = RefusalLog(interval=10.0, max_peers=8, clock=Clock())
    written = sum(refuse(log, f"ipv4:10.0.{i // 256}.{i % 256}:1", 1) for i in range(2000))
    assert written == 9  # eight addresses, then one line for all the others
    assert len(log._peers) <= 9
