"""Results of any size: inline when small, streamed in chunks when large, resumable, releasable.

The channel here has gRPC's default 4 MiB message limit on purpose: no result
of any size may need more.
"""

from __future__ import annotations

import hashlib
import json
import pickle

import cloudpickle
import grpc
import numpy as np
import pytest

from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk._proto.compute.v1 import compute_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def stub(local_server):
    channel = grpc.insecure_channel(local_server.target)  # default limits: 4 MiB per message
    yield pb_grpc.ComputeServiceStub(channel)
    channel.close()


def make_bytes(n):
    return b"\x01" * n


def make_array(n):
    return np.arange(n, dtype="float64")


def run_pickled(stub, func, *args, scheduler=pb.SCHEDULER_DISTRIBUTED):
    spec = pb.JobSpec(
        pickled_call=pb.PickledCall(payload=cloudpickle.dumps((func, args, {}))),
        scheduler=scheduler,
    )
    return stub.Run(pb.RunRequest(job=spec), timeout=120)


def fetch(stub, job_id, offset=0, chunk_size=0, fmt=pb.RESULT_FORMAT_UNSPECIFIED, release=False):
    stream = stub.GetJobResult(
        pb.GetJobResultRequest(
            job_id=job_id, offset=offset, chunk_size=chunk_size, result_format=fmt, release=release
        ),
        timeout=120,
    )
    header = next(stream).header
    data = bytearray()
    for message in stream:
        assert message.WhichOneof("part") == "chunk"
        data += message.chunk
    return header, data


def load(header, data):
    assert len(data) == header.total_size
    assert hashlib.sha256(data).hexdigest() == header.sha256
    if header.format == pb.RESULT_FORMAT_JSON:
        return json.loads(bytes(data))
    view = memoryview(data)
    segments, position = [], 0
    for size in header.segment_sizes:
        segments.append(view[position : position + size])
        position += size
    return pickle.loads(segments[0], buffers=segments[1:])


@pytest.mark.parametrize(
    "size", [0, 4 * MiB - 2048, 10 * MiB], ids=["empty", "just-under-4MiB", "10MiB"]
)
def test_bytes_results_round_trip_intact(stub, size):
    response = run_pickled(stub, make_bytes, size)
    assert response.job.state == pb.JOB_STATE_SUCCEEDED
    if size <= MiB:
        assert not response.result.streamed
        assert pickle.loads(response.result.pickle) == make_bytes(size)
    else:
        assert response.result.streamed and not response.result.WhichOneof("value")
        assert response.result.size_bytes >= size
    header, data = fetch(stub, response.job.job_id)
    assert load(header, data) == make_bytes(size)


def test_64_mib_array_streams_with_out_of_band_buffers_and_checksum(stub):
    n = 8 * MiB  # 64 MiB of float64
    response = run_pickled(stub, make_array, n)
    assert response.result.streamed and response.result.size_bytes >= 64 * MiB
    header, data = fetch(stub, response.job.job_id, chunk_size=3 * MiB)
    assert header.format == pb.RESULT_FORMAT_PICKLE
    assert len(header.segment_sizes) >= 2, "the array's buffer travels out of band"
    assert max(header.segment_sizes) >= 64 * MiB
    value = load(header, data)
    np.testing.assert_array_equal(value, make_array(n))


def test_cut_off_stream_resumes_from_its_offset(stub):
    response = run_pickled(stub, make_array, MiB)  # 8 MiB
    job_id = response.job.job_id
    stream = stub.GetJobResult(pb.GetJobResultRequest(job_id=job_id, chunk_size=MiB), timeout=60)
    header = next(stream).header
    first = bytearray()
    for message in stream:
        first += message.chunk
        if len(first) >= 3 * MiB:
            stream.cancel()
            break
    rest_header, rest = fetch(stub, job_id, offset=len(first), chunk_size=MiB)
    assert rest_header.offset == len(first) and rest_header.sha256 == header.sha256
    np.testing.assert_array_equal(load(header, first + rest), make_array(MiB))
    run_after = stub.GetJob(pb.GetJobRequest(job_id=job_id), timeout=10).job
    assert run_after.finish_time == response.job.finish_time, "the job was not run again"


def fetch_checksum_last(stub, job_id, offset=0, chunk_size=0):
    """A GetJobResult stream asked for ``checksum_last``: its header, bytes and trailer's SHA-256."""
    request = pb.GetJobResultRequest(
        job_id=job_id, offset=offset, chunk_size=chunk_size, checksum_last=True
    )
    messages = list(stub.GetJobResult(request, timeout=120))
    header, *chunks, trailer = messages
    assert header.WhichOneof("part") == "header" and trailer.WhichOneof("part") == "trailer"
    assert all(message.WhichOneof("part") == "chunk" for message in chunks)
    return header.header, bytearray(b"".join(m.chunk for m in chunks)), trailer.trailer.sha256


def test_checksum_last_sends_the_sha256_in_a_trailer(stub):
    response = run_pickled(stub, make_array, MiB)  # 8 MiB
    job_id = response.job.job_id
    header, data, sha256 = fetch_checksum_last(stub, job_id, chunk_size=MiB)
    assert header.sha256 == "" and header.total_size == len(data) and header.offset == 0
    assert sha256 == hashlib.sha256(data).hexdigest()
    np.testing.assert_array_equal(load_with(header, data, sha256), make_array(MiB))
    # Cut off halfway (the server drops the hash it started), then resumed
    # from an offset: the trailer still has the SHA-256 of the whole stream.
    cut = stub.GetJobResult(
        pb.GetJobResultRequest(job_id=job_id, chunk_size=MiB, checksum_last=True)
    )
    assert next(cut).header.sha256 == "" and next(cut).chunk
    cut.cancel()
    offset = 3 * MiB + 5
    rest_header, rest, rest_sha256 = fetch_checksum_last(
        stub, job_id, offset=offset, chunk_size=MiB
    )
    assert rest_header.sha256 == "" and rest_header.offset == offset
    assert rest == data[offset:] and rest_sha256 == sha256
    # Resumed at the very end (cut off just before the trailer): only the header and trailer.
    end_header, end, end_sha256 = fetch_checksum_last(stub, job_id, offset=len(data))
    assert end_header.offset == len(data) and not end and end_sha256 == sha256
    # Without checksum_last nothing changed: the SHA-256 is in the header and no trailer comes.
    plain_header, plain = fetch(stub, job_id)
    assert plain_header.sha256 == sha256 and plain == data


def test_checksum_last_with_release_frees_the_result_after_the_trailer(stub):
    job_id = run_pickled(stub, make_bytes, 2 * MiB).job.job_id
    request = pb.GetJobResultRequest(job_id=job_id, checksum_last=True, release=True)
    messages = list(stub.GetJobResult(request, timeout=60))
    assert messages[-1].WhichOneof("part") == "trailer"
    data = b"".join(m.chunk for m in messages)
    assert load_with(messages[0].header, data, messages[-1].trailer.sha256) == make_bytes(2 * MiB)
    with pytest.raises(grpc.RpcError) as info:
        fetch(stub, job_id)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def load_with(header, data, sha256):
    """:func:`load` for a header without a SHA-256, checked against ``sha256`` instead."""
    checked = pb.ResultHeader()
    checked.CopyFrom(header)
    checked.sha256 = sha256
    return load(checked, data)


def test_local_scheduler_results_stream_too(stub):
    response = run_pickled(stub, make_bytes, 5 * MiB, scheduler=pb.SCHEDULER_THREADS)
    assert response.result.streamed
    header, data = fetch(stub, response.job.job_id)
    assert load(header, data) == make_bytes(5 * MiB)


def test_json_stream_for_named_functions(stub):
    spec = pb.JobSpec(call=pb.FunctionCall(function="scale"))
    spec.call.args.append([1, 2, 3])
    job = stub.Run(pb.RunRequest(job=spec), timeout=30).job
    header, data = fetch(stub, job.job_id)
    assert header.format == pb.RESULT_FORMAT_JSON and load(header, data) == [2, 4, 6]
    header, data = fetch(stub, job.job_id, fmt=pb.RESULT_FORMAT_PICKLE)
    assert load(header, data) == [2.0, 4.0, 6.0]


def test_release_frees_the_result(stub):
    response = run_pickled(stub, make_bytes, 2 * MiB)
    job_id = response.job.job_id
    released = stub.ReleaseJob(pb.ReleaseJobRequest(job_id=job_id), timeout=10)
    assert released.released and not released.job.result_available
    assert not stub.ReleaseJob(pb.ReleaseJobRequest(job_id=job_id), timeout=10).released
    with pytest.raises(grpc.RpcError) as info:
        fetch(stub, job_id)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert "released by ReleaseJob" in info.value.details()

    once = run_pickled(stub, make_bytes, 1000).job.job_id
    header, data = fetch(stub, once, release=True)
    assert load(header, data) == make_bytes(1000)
    with pytest.raises(grpc.RpcError) as info:
        fetch(stub, once)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_result_stream_errors(stub):
    job = stub.Run(
        pb.RunRequest(job=pb.JobSpec(call=pb.FunctionCall(function="ping"))), timeout=30
    ).job
    for request, code, text in (
        (
            pb.GetJobResultRequest(job_id=job.job_id, chunk_size=10),
            grpc.StatusCode.INVALID_ARGUMENT,
            "chunk_size",
        ),
        (
            pb.GetJobResultRequest(job_id=job.job_id, offset=10**9),
            grpc.StatusCode.INVALID_ARGUMENT,
            "offset",
        ),
        (pb.GetJobResultRequest(job_id="f" * 32), grpc.StatusCode.NOT_FOUND, "no job with id"),
    ):
        with pytest.raises(grpc.RpcError) as info:
            list(stub.GetJobResult(request, timeout=30))
        assert info.value.code() == code and text in info.value.details()
    spec = pb.JobSpec(call=pb.FunctionCall(function="fail"))
    spec.call.args.append("x")
    failed = stub.Run(pb.RunRequest(job=spec), timeout=30).job
    with pytest.raises(grpc.RpcError) as info:
        list(stub.GetJobResult(pb.GetJobResultRequest(job_id=failed.job_id), timeout=30))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_run_and_wait_can_release_an_inline_result(stub):
    spec = pb.JobSpec(
        pickled_call=pb.PickledCall(payload=cloudpickle.dumps((make_bytes, (10,), {}))),
        scheduler=pb.SCHEDULER_DISTRIBUTED,
    )
    ran = stub.Run(pb.RunRequest(job=spec, release=True), timeout=60)
    assert pickle.loads(ran.result.pickle) == make_bytes(10) and not ran.job.result_available
    with pytest.raises(grpc.RpcError) as info:
        fetch(stub, ran.job.job_id)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    job = stub.SubmitJob(pb.SubmitJobRequest(job=spec), timeout=30).job
    waited = stub.WaitJob(pb.WaitJobRequest(job_id=job.job_id, release=True), timeout=60)
    assert pickle.loads(waited.result.pickle) == make_bytes(10)
    assert not stub.GetJob(pb.GetJobRequest(job_id=job.job_id), timeout=10).job.result_available
    big = pb.JobSpec(
        pickled_call=pb.PickledCall(payload=cloudpickle.dumps((make_bytes, (2 * MiB,), {})))
    )
    streamed = stub.Run(pb.RunRequest(job=big, release=True), timeout=60)
    assert streamed.result.streamed and streamed.job.result_available, "a streamed result is kept"
    header, data = fetch(stub, streamed.job.job_id, release=True)
    assert load(header, data) == make_bytes(2 * MiB)
