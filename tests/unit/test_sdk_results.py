"""Reassembling streamed results (no server process: the server's own encoder makes the bytes)."""

from __future__ import annotations

import numpy as np
import pytest

from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk._results import ResultAssembler
from client_sdk.errors import ComputeError
from server import convert, results


def _messages(stream: results.ResultStream, offset: int = 0, size: int = 64 * 1024):
    yield pb.GetJobResultResponse(header=convert.result_header(stream, offset))
    for chunk in stream.chunks(offset, size):
        yield pb.GetJobResultResponse(chunk=bytes(chunk))


def test_a_pickle_with_out_of_band_buffers_is_rebuilt() -> None:
    value = {"a": np.arange(200_000), "b": np.ones((100, 100)), "label": "x"}
    stream = results.encode_stream(value, "pickle", False)
    assert len(stream.segment_sizes) == 3  # the pickle and two NumPy buffers
    assembler = ResultAssembler()
    for message in _messages(stream):
        assembler.feed(message)
    assert assembler.complete
    rebuilt = assembler.value()
    np.testing.assert_array_equal(rebuilt["a"], value["a"])
    np.testing.assert_array_equal(rebuilt["b"], value["b"])
    assert rebuilt["label"] == "x"


def test_a_stream_cut_off_resumes_from_the_last_byte() -> None:
    value = np.arange(300_000)
    stream = results.encode_stream(value, "pickle", False)
    assembler = ResultAssembler()
    first = _messages(stream)
    for _ in range(5):  # the header and four chunks, then the connection drops
        assembler.feed(next(first))
    assert not assembler.complete and 0 < assembler.received < stream.total_size
    for message in _messages(stream, offset=assembler.received):
        assembler.feed(message)
    assert assembler.complete and not assembler.restart
    np.testing.assert_array_equal(assembler.value(), value)


def test_a_resumed_stream_of_other_bytes_starts_again() -> None:
    assembler = ResultAssembler()
    first = _messages(results.encode_stream(list(range(50_000)), "pickle", False))
    assembler.feed(next(first))
    assembler.feed(next(first))
    other = results.encode_stream(list(range(60_000)), "pickle", False)
    assembler.feed(next(_messages(other, offset=assembler.received)))
    assert assembler.restart
    assembler.reset()
    for message in _messages(other):
        assembler.feed(message)
    assert assembler.value() == list(range(60_000))


def test_json_results_and_corruption() -> None:
    stream = results.encode_stream({"k": [1, 2, 3]}, "json", True)
    assembler = ResultAssembler()
    for message in _messages(stream):
        assembler.feed(message)
    assert assembler.value() == {"k": [1, 2, 3]}
    # Bytes are checked as they arrive: corrupt them on the way.
    corrupted = ResultAssembler()
    header, chunk = _messages(stream)
    corrupted.feed(header)
    corrupted.feed(pb.GetJobResultResponse(chunk=b"[" + chunk.chunk[1:]))
    with pytest.raises(ComputeError, match="SHA-256"):
        corrupted.value()
