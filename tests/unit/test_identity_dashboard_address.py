"""Where the scheduler's HTTP server (the dashboard) listens: --dashboard-address and --host."""

from __future__ import annotations

import logging

import pytest

from server.cluster import dashboard_address


@pytest.mark.parametrize(
    "configured, host, expected",
    [
        (":8787", "127.0.0.1", "127.0.0.1:8787"),  # a bare port follows --host
        ("8787", "127.0.0.1", "127.0.0.1:8787"),
        (":0", "0.0.0.0", "0.0.0.0:0"),
        (":8787", "localhost", "localhost:8787"),
        ("0.0.0.0:8787", "127.0.0.1", "0.0.0.0:8787"),  # a host of its own is kept
        ("127.0.0.1:8787", "0.0.0.0", "127.0.0.1:8787"),
        (":8787,:8788", "10.0.0.5", "10.0.0.5:8787,10.0.0.5:8788"),
        (":8787", "::1", "127.0.0.1:8787"),  # Dask's dashboard cannot bind IPv6
        (":8787", "[::1]", "127.0.0.1:8787"),
        (":8787", "::", "0.0.0.0:8787"),
        ("", "0.0.0.0", "127.0.0.1:0"),  # off: the other HTTP routes stay on loopback
        ("", "127.0.0.1", "127.0.0.1:0"),
    ],
)
def test_the_dashboard_follows_host_unless_given_one(configured, host, expected):
    assert dashboard_address(configured, host) == expected


def test_an_ipv6_address_it_cannot_bind_falls_back_to_loopback_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="server.cluster"):
        assert dashboard_address(":8787", "2001:db8::5") == "127.0.0.1:8787"
    assert "cannot listen on the IPv6 address 2001:db8::5" in caplog.text
