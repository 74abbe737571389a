"""The SDK sends its caller's trace context (W3C ``traceparent``) with each call.

Only when the caller has a span: a caller that never imported OpenTelemetry
makes the SDK import none (checked in a fresh interpreter), and its calls carry
only their token.
"""

from __future__ import annotations

import subprocess
import sys

from opentelemetry.sdk.trace import TracerProvider

from client_sdk import _channel
from tests.helpers import ROOT

TOKEN = (("authorization", "Bearer s3cr3t"),)


def test_no_current_span_adds_nothing() -> None:
    assert _channel.with_trace_context(TOKEN) is TOKEN
    assert _channel.with_trace_context(None) is None


def test_a_current_span_goes_as_traceparent_beside_the_token() -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("caller") as span:
        metadata = _channel.with_trace_context(TOKEN)
    context = span.get_span_context()
    assert metadata[0] == TOKEN[0]
    assert dict(metadata)["traceparent"] == (
        f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    )


def test_each_call_reads_the_span_current_then() -> None:
    from client_sdk import ComputeClient

    tracer = TracerProvider().get_tracer("test")
    client = ComputeClient("127.0.0.1:1", token="s3cr3t", check_versions=False)
    try:
        assert client._metadata == TOKEN
        with tracer.start_as_current_span("caller"):
            assert "traceparent" in dict(client._metadata)
        assert client._metadata == TOKEN
    finally:
        client.close()


def test_a_caller_without_opentelemetry_imports_none() -> None:
    code = (
        "import sys\n"
        "from client_sdk import ComputeClient, _channel\n"
        "client = ComputeClient('127.0.0.1:1', token='t', check_versions=False)\n"
        "assert client._metadata == (('authorization', 'Bearer t'),)\n"
        "client.close()\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": ""},
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
