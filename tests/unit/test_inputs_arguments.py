"""The bounds of JSON arguments: their bytes read from the wire format before any
parse (server.interceptors.argument_bytes), and their values counted as they are
converted (server.convert.job_request)."""

from __future__ import annotations

import pytest

from client_sdk._proto.compute.v1 import compute_pb2 as pb
from server import convert
from server.errors import InvalidArgument
from server.interceptors import argument_bytes

RUN = "/compute.v1.ComputeService/Run"


def call_spec(args=(), kwargs=None) -> pb.JobSpec:
    spec = pb.JobSpec(call=pb.FunctionCall(function="add"), name="n" * 50, request_id="r")
    spec.call.args.extend(list(args))
    if kwargs:
        spec.call.kwargs.update(kwargs)
    return spec


def test_argument_bytes_are_read_from_the_wire_without_parsing():
    spec = call_spec([1.5] * 1000, {"k": ["x" * 100, {"deep": [None, True]}]})
    expected = spec.call.args.ByteSize() + spec.call.kwargs.ByteSize()
    raw = pb.RunRequest(job=spec, release=True).SerializeToString()
    assert argument_bytes(RUN, raw) == expected
    # SubmitJobs adds up its jobs; a pickled call has no JSON arguments.
    jobs = [spec, pb.JobSpec(pickled_call=pb.PickledCall(payload=b"p" * 5000)), spec]
    raw = pb.SubmitJobsRequest(jobs=jobs).SerializeToString()
    assert argument_bytes("/compute.v1.ComputeService/SubmitJobs", raw) == 2 * expected
    raw = pb.SubmitJobRequest(job=spec).SerializeToString()
    assert argument_bytes("/compute.v1.ComputeService/SubmitJob", raw) == expected


def test_a_repeated_job_field_counts_every_occurrence():
    # Protobuf merges a singular field sent twice: both count against the bound.
    one = pb.RunRequest(job=call_spec([1.0] * 10)).SerializeToString()
    assert argument_bytes(RUN, one + one) == 2 * argument_bytes(RUN, one)


@pytest.mark.parametrize("raw", [b"", b"\xff\xff\xff", b"\x0a\x50abc", b"\x0b"])
def test_bytes_that_are_no_message_count_as_none(raw):
    assert argument_bytes(RUN, raw) == 0  # the parser refuses them, with its own message


def test_other_methods_have_no_argument_bytes():
    raw = pb.GetJobRequest(job_id="x" * 100).SerializeToString()
    assert argument_bytes("/compute.v1.ComputeService/GetJob", raw) == 0


def test_values_are_counted_all_the_way_down():
    value = [1, [2, 3, {"a": [4, None], "b": {}}], "s"]
    assert convert.count_values(value, 100) == 10
    assert convert.count_values({"x": value}, 100) == 11
    assert convert.count_values([], 100) == 0


def test_job_request_refuses_more_values_than_the_bound_naming_it():
    spec = call_spec([1, 2, 3], {"k": [4, 5]})  # 3 + 1 + 2 = 6 values
    assert convert.job_request(spec, max_values=6).kwargs == {"k": [4, 5]}
    with pytest.raises(InvalidArgument, match=r"at most 5 a job \(--max-argument-values\)"):
        convert.job_request(spec, max_values=5)
    assert convert.job_request(spec).args == [1, 2, 3]  # no bound


def test_argument_bytes_of_a_spec():
    spec = call_spec([1.0], {"a": "b"})
    assert convert.argument_bytes(spec) == spec.call.args.ByteSize() + spec.call.kwargs.ByteSize()
    assert convert.argument_bytes(pb.JobSpec(pickled_call=pb.PickledCall(payload=b"x"))) == 0
