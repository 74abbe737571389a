"""2,000 unauthenticated calls make the server write a bounded number of log lines."""

from __future__ import annotations

import logging
import time

import grpc
import pytest

from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk._proto.compute.v1 import compute_pb2_grpc as pb_grpc
from server.interceptors import RefusalLog
from tests.helpers import local_settings, serving_in_process

pytestmark = pytest.mark.integration

TOKENS = "alice run refusal-log-token-0123456789\n"


def test_unauthenticated_calls_write_a_bounded_number_of_lines(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="server.interceptors")
    settings = local_settings(tmp_path, tokens=TOKENS, n_workers=1, local_processes=1)
    with serving_in_process(settings) as srv, grpc.insecure_channel(srv.target) as channel:
        stub = pb_grpc.ComputeServiceStub(channel)
        started = time.monotonic()
        codes = set()
        for i in range(2000):
            metadata = (("authorization", f"Bearer wrong-{i}"),) if i % 2 else ()
            try:
                stub.GetClusterInfo(pb.GetClusterInfoRequest(), metadata=metadata, timeout=30)
            except grpc.RpcError as exc:
                codes.add(exc.code())
        elapsed = time.monotonic() - started
    assert codes == {grpc.StatusCode.UNAUTHENTICATED}
    lines = [
        r for r in caplog.records if r.name == "server.interceptors" and "refused" in r.getMessage()
    ]
    # One line per interval from this one address, and one more for a summary.
    bound = 2 + int(elapsed / RefusalLog().interval)
    assert 1 <= len(lines) <= bound, f"{len(lines)} lines for 2,000 refused calls in {elapsed:.1f}s"
