"""When the server traces: ``--otlp-endpoint``, the standard ``OTEL_*`` variables, or not at all.

Off is the default, and off means no provider, no RPC interceptor and no
OpenTelemetry SDK imported (checked in a fresh interpreter). The spans
themselves are tested through a real server in tests/integration/test_tracing.py.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from server import telemetry
from server.config import Settings, SettingsError
from server.tracing import OFF
from tests.helpers import ROOT

ENDPOINT = "http://127.0.0.1:4317"


@pytest.mark.parametrize(
    ("otlp_endpoint", "environ", "expected"),
    [
        ("", {}, ()),
        (ENDPOINT, {}, ("otlp",)),
        ("", {"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT}, ("otlp",)),
        ("", {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": ENDPOINT}, ("otlp",)),
        ("", {"OTEL_TRACES_EXPORTER": "otlp"}, ("otlp",)),
        ("", {"OTEL_TRACES_EXPORTER": "console"}, ("console",)),
        (ENDPOINT, {"OTEL_TRACES_EXPORTER": "console"}, ("otlp", "console")),
        ("", {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT}, ()),
        (ENDPOINT, {"OTEL_TRACES_EXPORTER": "none"}, ()),
        (ENDPOINT, {"OTEL_SDK_DISABLED": "true"}, ()),
        ("", {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, ()),  # asks for no export
    ],
)
def test_which_exporters(otlp_endpoint, environ, expected) -> None:
    settings = Settings(otlp_endpoint=otlp_endpoint)
    assert telemetry.exporter_names(settings, environ) == expected


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "otlp or console only, not zipkin"),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT,
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            },
            "OTLP over gRPC only",
        ),
    ],
)
def test_an_exporter_the_server_lacks_is_refused_at_start(environ, message) -> None:
    with pytest.raises(RuntimeError, match=message):
        telemetry.tracing_from(Settings(), environ)


def test_nothing_configured_is_off() -> None:
    tracing = telemetry.tracing_from(Settings(), {})
    assert tracing is OFF
    assert not tracing.enabled and tracing.provider is None
    assert telemetry.server_interceptors(tracing) == []


def test_an_endpoint_turns_it_on_with_a_provider_of_the_server_s_own() -> None:
    from opentelemetry import trace

    tracing = telemetry.tracing_from(Settings(otlp_endpoint=ENDPOINT), {})
    try:
        assert tracing.enabled
        assert tracing.provider.resource.attributes["service.name"] == "dask-compute"
        assert len(telemetry.server_interceptors(tracing)) == 1
        # The process-wide provider is left alone (the caller's, if any).
        assert tracing.provider is not trace.get_tracer_provider()
    finally:
        tracing.shutdown()


def test_the_environment_names_the_service() -> None:
    environ = {"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "compute-eu"}
    tracing = telemetry.tracing_from(Settings(), environ)
    try:
        assert tracing.provider.resource.attributes["service.name"] == "compute-eu"
    finally:
        tracing.shutdown()


def test_the_flag_takes_an_http_or_https_url() -> None:
    assert Settings.from_env({"DASK_COMPUTE_OTLP_ENDPOINT": ENDPOINT}).otlp_endpoint == ENDPOINT
    with pytest.raises(SettingsError, match="otlp_endpoint must be http://HOST:PORT"):
        Settings(otlp_endpoint="collector:4317")


def test_a_server_without_tracing_imports_no_opentelemetry() -> None:
    code = (
        "import sys\n"
        "from server.app import build_server, running\n"
        "from server.config import Settings\n"
        "from server import telemetry\n"
        "tracing = telemetry.tracing_from(Settings(), {})\n"
        "assert not tracing.enabled and telemetry.server_interceptors(tracing) == []\n"
        # (The server's check for its extra finds the namespace packages: no code runs.)
        "print(sorted(m for m, mod in sys.modules.items()\n"
        "             if m.startswith('opentelemetry') and getattr(mod, '__file__', None)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": ""},
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
