"""Inputs of any size, uploaded once with PutObject and used by reference in many jobs."""

from __future__ import annotations

import hashlib
import io
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
    channel = grpc.insecure_channel(local_server.target)
    yield pb_grpc.ComputeServiceStub(channel)
    channel.close()


class Ref:
    """A stand-in for an uploaded object inside pickled work."""

    def __init__(self, object_id):
        self.object_id = object_id


class RefPickler(cloudpickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Ref):
            return f"dask-compute-object:{obj.object_id}"
        return None


def dumps_with_refs(obj):
    buffer = io.BytesIO()
    RefPickler(buffer, protocol=5).dump(obj)
    return buffer.getvalue()


def encode(value):
    buffers = []
    main = cloudpickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    segments = [main] + [bytes(b.raw()) for b in buffers]
    data = b"".join(segments)
    return data, [len(s) for s in segments], hashlib.sha256(data).hexdigest()


def upload(stub, data, sizes, sha, chunk=MiB, stop_after=None, announce=None):
    def messages():
        yield pb.PutObjectRequest(
            header=pb.ObjectHeader(
                sha256=sha, size_bytes=announce or len(data), segment_sizes=sizes
            )
        )
        limit = len(data) if stop_after is None else stop_after
        for start in range(0, limit, chunk):
            yield pb.PutObjectRequest(chunk=data[start : min(start + chunk, limit)])

    return stub.PutObject(messages(), timeout=120)


def pickled(func, *args, object_ids=(), scheduler=pb.SCHEDULER_DISTRIBUTED):
    return pb.JobSpec(
        pickled_call=pb.PickledCall(
            payload=dumps_with_refs((func, args, {})), object_ids=list(object_ids)
        ),
        scheduler=scheduler,
    )


def value_of(response):
    assert response.job.state == pb.JOB_STATE_SUCCEEDED, response.job.error
    if response.result.WhichOneof("value") == "json":
        return response.result.json.number_value
    return pickle.loads(response.result.pickle)


def test_upload_once_and_use_in_many_jobs(stub):
    array = np.arange(3 * MiB, dtype="float64")  # 24 MiB
    data, sizes, sha = encode(array)
    assert len(sizes) == 2, "the array's buffer travels out of band"
    first = upload(stub, data, sizes, sha)
    object_id = first.object.object_id
    assert (
        object_id == f"sha256:{sha}" and not first.existed and first.object.size_bytes == len(data)
    )
    again = upload(stub, b"", sizes, sha, announce=len(data))
    assert again.existed, "a held object is not uploaded again"
    assert stub.GetObject(
        pb.GetObjectRequest(object_id=object_id), timeout=10
    ).object.size_bytes == len(data)

    expected = float(array.sum())
    for scheduler in (pb.SCHEDULER_DISTRIBUTED, pb.SCHEDULER_THREADS, pb.SCHEDULER_SYNCHRONOUS):
        spec = pb.JobSpec(call=pb.FunctionCall(function="array_sum"), scheduler=scheduler)
        spec.call.args.append({"$object": object_id})
        assert value_of(stub.Run(pb.RunRequest(job=spec), timeout=60)) == expected
        total = stub.Run(
            pb.RunRequest(
                job=pickled(np.sum, Ref(object_id), object_ids=[object_id], scheduler=scheduler)
            ),
            timeout=60,
        )
        assert value_of(total) == expected
    jobs = [
        stub.SubmitJob(
            pb.SubmitJobRequest(job=pickled(np.max, Ref(object_id), object_ids=[object_id])),
            timeout=30,
        ).job
        for _ in range(20)
    ]
    for job in jobs:
        done = stub.WaitJob(pb.WaitJobRequest(job_id=job.job_id), timeout=60)
        assert pickle.loads(done.result.pickle) == array.max()

    assert stub.DeleteObject(pb.DeleteObjectRequest(object_id=object_id), timeout=10).deleted
    assert not stub.DeleteObject(pb.DeleteObjectRequest(object_id=object_id), timeout=10).deleted
    with pytest.raises(grpc.RpcError) as info:
        stub.Run(
            pb.RunRequest(job=pickled(np.sum, Ref(object_id), object_ids=[object_id])), timeout=30
        )
    assert (
        info.value.code() == grpc.StatusCode.NOT_FOUND
        and "upload it with PutObject" in info.value.details()
    )


def test_cut_off_upload_leaves_nothing_behind(stub):
    data, sizes, sha = encode(b"y" * (3 * MiB))
    with pytest.raises(grpc.RpcError) as info:
        upload(stub, data, sizes, sha, stop_after=MiB)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"ended after {MiB} of {len(data)} bytes; nothing was kept" in info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        stub.GetObject(pb.GetObjectRequest(object_id=f"sha256:{sha}"), timeout=10)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    "case, code, text",
    [
        ("bad-hash", grpc.StatusCode.INVALID_ARGUMENT, "SHA-256 is"),
        ("not-hex", grpc.StatusCode.INVALID_ARGUMENT, "is not of the form"),
        ("garbage", grpc.StatusCode.INVALID_ARGUMENT, "could not be loaded on the cluster"),
        ("too-big", grpc.StatusCode.RESOURCE_EXHAUSTED, "max_object_bytes"),
        ("no-header", grpc.StatusCode.INVALID_ARGUMENT, "starts with its header"),
    ],
)
def test_bad_uploads(stub, case, code, text):
    data, sizes, _sha = encode([1, 2, 3])
    with pytest.raises(grpc.RpcError) as info:
        if case == "bad-hash":
            upload(stub, data, sizes, "0" * 64)
        elif case == "not-hex":
            upload(stub, data, sizes, "xyz")
        elif case == "garbage":
            junk = b"not a pickle at all"
            upload(stub, junk, [len(junk)], hashlib.sha256(junk).hexdigest())
        elif case == "too-big":
            upload(stub, b"", [], "a" * 64, announce=10 * 1024**4)
        else:
            stub.PutObject(iter([pb.PutObjectRequest(chunk=b"abc")]), timeout=30)
    assert info.value.code() == code and text in info.value.details()


def test_references_must_be_listed_and_well_formed(stub):
    data, sizes, sha = encode([5, 6])
    object_id = upload(stub, data, sizes, sha).object.object_id
    with pytest.raises(grpc.RpcError) as info:
        stub.Run(pb.RunRequest(job=pickled(sum, Ref(object_id))), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "which its request does not list" in info.value.details()
    spec = pb.JobSpec(call=pb.FunctionCall(function="array_sum"))
    spec.call.args.append({"$object": "sha256:nope"})
    with pytest.raises(grpc.RpcError) as info:
        stub.Run(pb.RunRequest(job=spec), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (
        value_of(
            stub.Run(
                pb.RunRequest(job=pickled(sum, Ref(object_id), object_ids=[object_id])), timeout=30
            )
        )
        == 11
    )
