"""Uploads reserve memory as bytes arrive, never for what a header announces, and
one caller's uploads in progress are bounded in number and in bytes."""

from __future__ import annotations

import asyncio
import hashlib
import tracemalloc

import pytest

from server import objects
from server.errors import InvalidArgument, ResourceExhausted
from server.uploads import UploadLimits

MiB = 1024 * 1024


async def _chunks(*pieces: bytes):
    for piece in pieces:
        yield piece
        await asyncio.sleep(0)


def test_a_header_announcing_a_huge_size_allocates_nothing_for_it():
    announced = 256 * MiB
    tracemalloc.start()
    try:
        with pytest.raises(InvalidArgument, match=f"ended after 1024 of {announced} bytes"):
            asyncio.run(objects.receive(_chunks(b"x" * 1024), announced, [], "0" * 64))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * MiB, f"receiving 1 KiB of an announced 256 MiB took {peak:,} bytes at peak"


def test_each_chunk_is_reserved_as_it_arrives_and_a_refusal_stops_the_upload():
    reserved: list[int] = []

    def reserve(n: int) -> None:
        if sum(reserved) + n > 250:
            raise ResourceExhausted("over the bound")
        reserved.append(n)

    data = bytes(range(200)) + bytes(100)
    sha = hashlib.sha256(data).hexdigest()
    ok = asyncio.run(
        objects.receive(_chunks(data[:100], data[100:]), 300, [], None, lambda n: None)
    )
    assert ok == data
    with pytest.raises(ResourceExhausted):
        asyncio.run(
            objects.receive(_chunks(data[:100], data[100:200], data[200:]), 300, [], sha, reserve)
        )
    assert reserved == [100, 100]


def test_a_caller_has_at_most_so_many_uploads_in_progress():
    limits = UploadLimits(max_uploads=2, max_bytes=10 * MiB)
    with limits.admit("alice", 5), limits.admit("alice", 5):
        with pytest.raises(ResourceExhausted, match=r"--max-uploads-per-caller=2"):
            limits.admit("alice", 5).__enter__()
        with limits.admit("bob", 5):  # another caller has its own count
            assert limits.in_progress("bob") == (1, 0)
        assert limits.in_progress("alice") == (2, 0)
    assert limits.in_progress("alice") == (0, 0)
    with limits.admit("alice", 5):  # the finished ones gave their places back
        pass


def test_a_callers_uploads_hold_at_most_so_many_bytes():
    limits = UploadLimits(max_uploads=4, max_bytes=1000)
    with pytest.raises(ResourceExhausted, match=r"at most 1,000 .*--max-upload-bytes-per-caller"):
        limits.admit("alice", 1001).__enter__()  # announced past the bound: refused at once
    assert limits.in_progress("alice") == (0, 0)
    with limits.admit("alice", 800) as first, limits.admit("alice", 800) as second:
        first(600)
        with pytest.raises(ResourceExhausted, match=r"would hold 1,001 bytes"):
            second(401)
        second(400)
        assert limits.in_progress("alice") == (2, 1000)
    assert limits.in_progress("alice") == (0, 0)
    with limits.admit("alice", 1000) as again:
        again(1000)
