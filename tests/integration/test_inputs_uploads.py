"""PutObject headers announcing huge sizes cost the server no memory, one caller's
uploads in progress are bounded (``--max-uploads-per-caller``,
``--max-upload-bytes-per-caller``), and so are all callers' together
(``--max-upload-bytes``), answered RESOURCE_EXHAUSTED naming the flag.

The server is a process of its own, so its memory is what psutil reads.
"""

from __future__ import annotations

import hashlib
import pickle
import queue
import re
import threading
import urllib.request

import grpc
import psutil
import pytest

from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk._proto.compute.v1 import compute_pb2_grpc as pb_grpc
from tests.helpers import free_port, running_server, wait_until

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


# -- the bound on all callers' uploads together -----------------------------------------

ALICE = "alice-uploads-token-0123456789"
BOB = "bob-uploads-token-0123456789ab"
#: Each caller may hold 16 MiB of uploads in progress, all of them 20 MiB together.
PER_CALLER = 16 * MiB
IN_ALL = 20 * MiB


@pytest.fixture(scope="module")
def bound_server(tmp_path_factory):
    directory = tmp_path_factory.mktemp("uploads-bound")
    tokens = directory / "tokens"
    tokens.write_text(f"alice run,code {ALICE}\nbob run,code {BOB}\n")
    tokens.chmod(0o600)
    metrics_port = free_port()
    args = (
        "--no-processes", "--n-workers", "1",
        "--local-processes", "1",
        "--dashboard-address", "",
        "--tokens-file", str(tokens),
        "--metrics-port", str(metrics_port),
        "--max-upload-bytes-per-caller", str(PER_CALLER),
        "--max-upload-bytes", str(IN_ALL),
    )  # fmt: skip
    with running_server(args, directory / "server.log") as srv:
        yield srv, metrics_port


def upload(data: bytes, hold: threading.Event | None = None):
    """A PutObject stream of ``data`` in 1 MiB chunks; with ``hold``, every byte is
    sent and the stream then waits for ``hold`` before it ends."""
    sha = hashlib.sha256(data).hexdigest()
    yield pb.PutObjectRequest(header=pb.ObjectHeader(sha256=sha, size_bytes=len(data)))
    for start in range(0, len(data), MiB):
        yield pb.PutObjectRequest(chunk=data[start : start + MiB])
    if hold is not None:
        hold.wait(120)


def upload_bytes_received(metrics_port: int) -> float:
    """The chunk bytes of PutObject the server has taken so far (each is reserved
    against the bounds as it is taken, before the next is read)."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    pattern = r'^dask_compute_received_bytes_total\{method="PutObject"\} ([0-9.e+]+)$'
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_uploads_of_all_callers_together_are_bounded_and_the_refused_one_gives_its_bytes_back(
    bound_server,
):
    srv, metrics_port = bound_server
    alices = pickle.dumps(b"a" * (12 * MiB))  # under alice's 16 MiB
    bobs = pickle.dumps(b"b" * (10 * MiB))  # under bob's 16 MiB; with alice's, past 20 MiB
    release = threading.Event()
    with grpc.insecure_channel(srv.target) as channel:
        stub = pb_grpc.ComputeServiceStub(channel)
        auth = {
            name: (("authorization", f"Bearer {token}"),)
            for name, token in (("alice", ALICE), ("bob", BOB))
        }
        stub.ListJobs(pb.ListJobsRequest(), metadata=auth["alice"], timeout=30)  # serving
        before = upload_bytes_received(metrics_port)
        first = stub.PutObject.future(
            upload(alices, hold=release), metadata=auth["alice"], timeout=120
        )
        try:
            # Every byte of alice's upload is held in the server, and it is still open.
            wait_until(
                lambda: first.done() or upload_bytes_received(metrics_port) >= before + len(alices),
                message="the server to take all of alice's bytes",
            )
            assert not first.done(), first.exception()
            with pytest.raises(grpc.RpcError) as refused:
                stub.PutObject(upload(bobs), metadata=auth["bob"], timeout=60)
        finally:
            release.set()
        stored = first.result(timeout=60)
        # Nothing of either is still counted: bob may now upload nearly all the
        # server takes (15 MiB with the refused 10 or alice's 12 would be past it).
        again = stub.PutObject(
            upload(pickle.dumps(b"c" * (15 * MiB))), metadata=auth["bob"], timeout=60
        )
    assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, refused.value.details()
    details = refused.value.details()
    assert "(--max-upload-bytes)" in details and f"at most {IN_ALL:,}" in details, details
    assert stored.object.object_id == f"sha256:{hashlib.sha256(alices).hexdigest()}"
    assert stored.object.size_bytes == len(alices) and not stored.existed
    assert again.object.size_bytes > 15 * MiB and not again.existed
