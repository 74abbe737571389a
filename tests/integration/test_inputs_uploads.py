"""PutObject headers announcing huge sizes cost the server no memory, and one
caller's uploads in progress are bounded (``--max-uploads-per-caller``,
``--max-upload-bytes-per-caller``), answered RESOURCE_EXHAUSTED naming the flag.

The server is a process of its own, so its memory is what psutil reads.
"""

from __future__ import annotations

import queue
import threading

import grpc
import psutil
import pytest

from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk._proto.compute.v1 import compute_pb2_grpc as pb_grpc
from tests.helpers import running_server

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
ANNOUNCED = 512 * MiB
MAX_UPLOADS = 3


@pytest.fixture(scope="module")
def uploads_server(tmp_path_factory):
    args = (
        "--n-workers", "1",
        "--local-processes", "1",
        "--dashboard-address", "",
        "--max-uploads-per-caller", str(MAX_UPLOADS),
        "--max-upload-bytes-per-caller", str(1024 * MiB),
    )  # fmt: skip
    with running_server(args, tmp_path_factory.mktemp("uploads") / "server.log") as srv:
        yield srv


def header_only(number: int, size: int, release: threading.Event):
    """A PutObject stream that sends its header, then nothing until ``release``."""
    sha = f"{number:064x}"
    yield pb.PutObjectRequest(header=pb.ObjectHeader(sha256=sha, size_bytes=size))
    release.wait(120)


def test_headers_with_no_bytes_cost_nothing_and_the_callers_bound_answers(uploads_server):
    process = psutil.Process(uploads_server.process.pid)
    release = threading.Event()
    answered: queue.Queue = queue.Queue()
    with grpc.insecure_channel(uploads_server.target) as channel:
        stub = pb_grpc.ComputeServiceStub(channel)
        stub.ListJobs(pb.ListJobsRequest(), timeout=30)  # connected and serving
        before = process.memory_info().rss
        calls = []
        try:
            for number in range(MAX_UPLOADS + 1):
                call = stub.PutObject.future(header_only(number, ANNOUNCED, release), timeout=120)
                call.add_done_callback(answered.put)
                calls.append(call)
            # The admissions of one caller's uploads are counted one at a time,
            # so whatever order the headers arrive in, exactly one is refused,
            # and once it is, the others are receiving.
            refused = answered.get(timeout=60)
            grown = process.memory_info().rss - before
            assert refused.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, refused
            assert "--max-uploads-per-caller=3" in refused.details()
            assert answered.empty()  # the other three are still in progress
        finally:
            release.set()
            for call in calls:
                call.cancel()
    # Three uploads announcing 512 MiB each, with no bytes sent: allocating the
    # announced sizes would have taken 1.5 GiB.
    assert grown < 64 * MiB, f"the server grew by {grown / MiB:.0f} MiB"


def test_an_upload_announcing_more_than_a_caller_may_hold_is_refused_at_once(uploads_server):
    release = threading.Event()
    release.set()
    with grpc.insecure_channel(uploads_server.target) as channel:
        stub = pb_grpc.ComputeServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.PutObject(header_only(99, 2048 * MiB, release), timeout=60)
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "--max-upload-bytes-per-caller" in caught.value.details()
