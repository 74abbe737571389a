"""Uploads reserve memory as bytes arrive, never for what a header announces; one
caller's uploads in progress are bounded in number and in bytes, and all callers'
uploads in bytes."""

from __future__ import annotations

import asyncio
import hashlib
import tracemalloc

import pytest

from server import objects
from server.config import Settings, SettingsError
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


def test_all_callers_uploads_hold_at_most_so_many_bytes_and_a_refusal_gives_its_bytes_back():
    limits = UploadLimits(max_uploads=4, max_bytes=1000, max_total_bytes=1500)
    with limits.admit("alice", 900) as alice:
        # Both announced while there was room; each stays under its own bound.
        with pytest.raises(ResourceExhausted) as refused, limits.admit("bob", 900) as bob:
            alice(800)
            bob(600)
            assert limits.in_progress() == (2, 1400)
            bob(101)
        # bob's 600 bytes were given back; alice's upload goes on, and another's fits
        assert limits.in_progress() == (1, 800) and limits.in_progress("bob") == (0, 0)
        alice(100)
        with limits.admit("carol", 600) as carol:
            carol(600)
            assert limits.in_progress() == (2, 1500)
    assert limits.in_progress() == (0, 0)
    message = str(refused.value)
    assert "would hold 1,501 bytes" in message and "at most 1,500" in message
    assert "(--max-upload-bytes)" in message and "per-caller" not in message


def test_a_header_announcing_more_than_all_uploads_may_hold_is_refused_at_once():
    limits = UploadLimits(max_uploads=4, max_bytes=4000, max_total_bytes=1500)
    with pytest.raises(ResourceExhausted, match=r"would hold 1,501 bytes.*\(--max-upload-bytes\)$"):
        limits.admit("alice", 1501).__enter__()  # could never fit: no hint to retry
    assert limits.in_progress() == (0, 0)
    with limits.admit("alice", 1000) as alice:
        alice(1000)
        # An announcement reserves nothing: what it would take is counted as it comes.
        with limits.admit("bob", 1500) as bob:
            bob(500)
            with pytest.raises(ResourceExhausted, match=r"retry when others have finished"):
                bob(1)
    assert limits.in_progress() == (0, 0)


def test_the_server_wide_bound_defaults_to_a_quarter_of_the_memory_this_process_may_use():
    from distributed.system import MEMORY_LIMIT

    assert Settings().max_upload_bytes is None
    assert Settings().upload_bytes_bound == MEMORY_LIMIT // 4
    env = {"DASK_COMPUTE_MAX_UPLOAD_BYTES": "12345"}
    assert Settings.from_env(env).upload_bytes_bound == 12345
    assert Settings.from_env(env, max_upload_bytes=99).upload_bytes_bound == 99
    assert Settings.from_env({"DASK_COMPUTE_MAX_UPLOAD_BYTES": "auto"}).max_upload_bytes is None
    with pytest.raises(SettingsError, match="max_upload_bytes must be at least 1"):
        Settings(max_upload_bytes=0)
