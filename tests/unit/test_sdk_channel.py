"""Targets, credentials and metadata (no server)."""

from __future__ import annotations

import grpc
import pytest

from client_sdk import ComputeClient, _channel


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("127.0.0.1:50051", ("127.0.0.1:50051", False)),
        ("grpc://example.org:1234", ("example.org:1234", False)),
        ("grpcs://example.org:443", ("example.org:443", True)),
        ("[::1]:50051", ("[::1]:50051", False)),
    ],
)
def test_targets(given: str, expected: tuple[str, bool]) -> None:
    assert _channel.parse_target(given) == expected


@pytest.mark.parametrize("bad", ["localhost", "http://h:1", "h:port", "grpc://h:1/path", ":50051"])
def test_malformed_targets_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="target must be"):
        _channel.parse_target(bad)


def test_the_default_target_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DASK_COMPUTE_TARGET", "grpc://10.0.0.1:9999")
    assert _channel.parse_target(None) == ("10.0.0.1:9999", False)
    monkeypatch.delenv("DASK_COMPUTE_TARGET")
    assert _channel.parse_target(None) == (_channel.DEFAULT_TARGET, False)


def test_token_metadata() -> None:
    assert _channel.call_metadata(None) is None
    assert _channel.call_metadata("s3cr3t") == (("authorization", "Bearer s3cr3t"),)
    for bad in ("", "two words", "line\nbreak"):
        with pytest.raises(ValueError, match="token"):
            _channel.call_metadata(bad)


def test_credentials() -> None:
    assert _channel.credentials(False) is None
    assert _channel.credentials(None) is None
    assert isinstance(_channel.credentials(True), grpc.ChannelCredentials)
    with pytest.raises(OSError):
        _channel.credentials("/no/such/ca.pem")


def test_a_client_describes_its_address_and_refuses_bad_options() -> None:
    with ComputeClient("grpcs://127.0.0.1:1", timeout=0.5) as client:
        assert client.address == "grpcs://127.0.0.1:1"
        assert repr(client) == "<ComputeClient: 'grpcs://127.0.0.1:1' not connected>"
    with pytest.raises(ValueError, match="timeout"):
        ComputeClient("127.0.0.1:1", timeout=0)


def test_retries_cover_exactly_the_calls_that_change_nothing() -> None:
    import json

    config = json.loads(_channel.SERVICE_CONFIG)["methodConfig"][0]
    methods = {n.get("method") for n in config["name"] if n["service"] == "compute.v1.ComputeService"}
    assert methods == {"GetClusterInfo", "ListFunctions", "GetJob", "WaitJob", "ListJobs", "CancelJob"}
    assert config["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
