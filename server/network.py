"""Addresses: whether binding a host keeps the server reachable from this machine only.

Plain Python (no ``grpc``): the access policy (:mod:`server.auth`) and the
cluster (:mod:`server.cluster`) ask it.
"""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server reachable from this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name might resolve anywhere: treat it as the network
