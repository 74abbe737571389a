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


def _checksum_last(stream: results.ResultStream, offset: int = 0, size: int = 64 * 1024):
    """The messages a server sends when asked for ``checksum_last``."""
    assert stream.sha256 == ""
    yield from _messages(stream, offset, size)
    trailer = pb.ResultTrailer(sha256=stream.compute_sha256())
    yield pb.GetJobResultResponse(trailer=trailer)


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


def test_the_checksum_can_come_last_in_a_trailer() -> None:
    value = {"a": np.arange(200_000), "label": "x"}
    stream = results.encode_stream(value, "pickle", False, checksum=False)
    assert stream.sha256 == "" and stream.compute_sha256()
    assembler = ResultAssembler()
    *body, trailer = _checksum_last(stream)
    for message in body:
        assembler.feed(message)
    assert assembler.received == stream.total_size
    assert not assembler.complete, "the bytes are in, but not yet the SHA-256 to check them"
    assembler.feed(trailer)
    assert assembler.complete and not assembler.restart
    rebuilt = assembler.value()
    np.testing.assert_array_equal(rebuilt["a"], value["a"])
    assert rebuilt["label"] == "x"


def test_a_stream_without_its_trailer_is_refused() -> None:
    stream = results.encode_stream(np.arange(100_000), "pickle", False, checksum=False)
    assembler = ResultAssembler()
    for message in _messages(stream):  # the header (no SHA-256) and chunks, no trailer
        assembler.feed(message)
    assert not assembler.complete
    with pytest.raises(ComputeError, match="without its SHA-256"):
        assembler.value()


@pytest.mark.parametrize("resumed", [False, True], ids=["one-stream", "resumed"])
def test_a_corrupted_chunk_is_caught_by_the_trailer(resumed: bool) -> None:
    value = np.arange(300_000)
    stream = results.encode_stream(value, "pickle", False, checksum=False)
    assembler = ResultAssembler()
    messages = list(_checksum_last(stream))
    if resumed:  # the header and four chunks, then the connection drops
        for message in messages[:5]:
            assembler.feed(message)
        messages = list(_checksum_last(stream, offset=assembler.received))
    *body, last_chunk, trailer = messages
    for message in body:
        assembler.feed(message)
    chunk = bytearray(last_chunk.chunk)
    chunk[-1] ^= 1
    assembler.feed(pb.GetJobResultResponse(chunk=bytes(chunk)))
    assembler.feed(trailer)
    if resumed:
        # Bytes of two streams that do not match: perhaps encoded afresh, so
        # fetched again from 0, once; a second mismatch is corruption.
        assert assembler.restart and not assembler.complete
        assembler.reset()
        *body, last_chunk, trailer = _checksum_last(stream)
        for message in body:
            assembler.feed(message)
        assembler.feed(pb.GetJobResultResponse(chunk=bytes(chunk)))
        for message in _checksum_last(stream, offset=assembler.received):
            assembler.feed(message)  # resumed once more: no second restart
    assert assembler.complete and not assembler.restart
    with pytest.raises(ComputeError, match="SHA-256"):
        assembler.value()


def test_a_stream_cut_off_before_its_trailer_is_resumed_at_the_end() -> None:
    value = np.arange(300_000)
    stream = results.encode_stream(value, "pickle", False, checksum=False)
    assembler = ResultAssembler()
    *body, _ = _checksum_last(stream)
    for message in body:  # every byte, then the connection drops
        assembler.feed(message)
    assert assembler.received == stream.total_size and not assembler.complete
    resumed = list(_checksum_last(stream, offset=assembler.received))
    assert [m.WhichOneof("part") for m in resumed] == ["header", "trailer"]
    for message in resumed:
        assembler.feed(message)
    assert assembler.complete and not assembler.restart
    np.testing.assert_array_equal(assembler.value(), value)


def test_a_resumed_stream_of_other_bytes_without_header_checksums_starts_again() -> None:
    assembler = ResultAssembler()
    first = _checksum_last(
        results.encode_stream(list(range(50_000)), "pickle", False, checksum=False)
    )
    assembler.feed(next(first))
    assembler.feed(next(first))
    other = results.encode_stream(list(range(60_000)), "pickle", False, checksum=False)
    assembler.feed(next(_checksum_last(other, offset=assembler.received)))
    assert assembler.restart, "another size: other bytes"
    assembler.reset()
    for message in _checksum_last(other):
        assembler.feed(message)
    assert assembler.value() == list(range(60_000))
