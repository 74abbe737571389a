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


def test_the_calls_the_sdk_makes_are_retried_on_unavailable_only() -> None:
    import json

    from client_sdk._proto.compute.v1 import compute_pb2 as pb

    config = json.loads(_channel.SERVICE_CONFIG)["methodConfig"][0]
    retried = {
        n.get("method") for n in config["name"] if n["service"] == "compute.v1.ComputeService"
    }
    assert retried <= set(pb.DESCRIPTOR.services_by_name["ComputeService"].methods_by_name)
    made = {
        "GetClusterInfo",
        "ListFunctions",
        "Run",
        "SubmitJob",
        "SubmitJobs",
        "GetJob",
        "WaitJob",
        "CancelJob",
        "ListJobs",
        "GetJobResult",
        "ReleaseJob",
    }
    assert made <= retried
    assert config["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]


def test_every_submission_carries_a_fresh_request_id() -> None:
    from client_sdk import _convert

    specs = [
        _convert.function_call_spec("add", (1, 2), {}, None),
        _convert.pickled_call_spec(len, ((1,),), {}, "threads"),
        _convert.graph_spec(({"x": 1}, "x"), None),
        _convert.function_call_spec("add", (1, 2), {}, None),
    ]
    ids = [spec.request_id for spec in specs]
    assert len(set(ids)) == 4 and all(len(i) == 32 for i in ids)
