"""The data plane moves large bytes without extra copies or passes (no server process)."""

from __future__ import annotations

import asyncio
import hashlib
import pickle

import numpy as np
import pytest

from client_sdk import _pickle
from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk._results import ResultAssembler
from client_sdk.errors import ComputeError
from server import cluster_results, convert, objects, results
from server.errors import InvalidArgument

# -- the SDK's upload ----------------------------------------------------------


def test_an_upload_is_sliced_from_its_pieces_as_from_the_joined_bytes() -> None:
    value = {"a": np.arange(100_000), "b": np.ones(3), "label": "x"}
    data, sizes, sha = _pickle.encode_object_pieces(value)
    joined = b"".join(data.pieces)
    assert len(sizes) == 3 and sum(sizes) == len(data) == len(joined)
    assert sha == hashlib.sha256(joined).hexdigest()
    for start, stop in [(0, 10), (5, sizes[0] + 7), (0, len(joined)), (len(joined) - 3, None)]:
        assert data[start:stop] == joined[start:stop]
    for size in (1, 1000, 65536):  # the upload's chunks, across the pieces' ends
        chunks = [data[i : i + size] for i in range(0, len(data), size)]
        assert all(isinstance(chunk, bytes) for chunk in chunks)
        assert b"".join(chunks) == joined
    assert data[len(data) : len(data) + 5] == b""
    assert bytes(data) == joined


def test_the_pieces_are_the_values_own_buffers() -> None:
    array = np.arange(1000)
    data, _, _ = _pickle.encode_object_pieces(array)
    assert np.shares_memory(np.frombuffer(data.pieces[1], dtype=array.dtype), array)


def test_empty_pieces_are_skipped_when_slicing() -> None:
    data = _pickle.ObjectBytes([b"ab", b"", b"", b"cde", b""])
    assert len(data) == 5
    assert [data[i : i + 2] for i in range(0, 5, 2)] == [b"ab", b"cd", b"e"]
    with pytest.raises(TypeError):
        data[0]  # type: ignore[index]


# -- the SDK's download -------------------------------------------------------


def _messages(stream: results.ResultStream, offset: int = 0, size: int = 64 * 1024):
    yield pb.GetJobResultResponse(header=convert.result_header(stream, offset))
    for chunk in stream.chunks(offset, size):
        yield pb.GetJobResultResponse(chunk=bytes(chunk))


class _CountingChunk:
    """A chunk message that counts how often its bytes are read (upb copies them each time)."""

    def __init__(self, chunk: bytes) -> None:
        self._chunk = chunk
        self.reads = 0

    def WhichOneof(self, name: str) -> str:
        return "chunk"

    @property
    def chunk(self) -> bytes:
        self.reads += 1
        return self._chunk


def test_each_chunk_is_read_once_and_hashed_as_it_arrives(monkeypatch) -> None:
    value = np.arange(200_000)
    stream = results.encode_stream(value, "pickle", False)
    assembler = ResultAssembler()
    header, *chunks = _messages(stream)
    assembler.feed(header)
    counted = [_CountingChunk(message.chunk) for message in chunks]
    for message in counted:
        assembler.feed(message)
    assert [message.reads for message in counted] == [1] * len(counted)

    def no_second_pass(*args):
        raise AssertionError("value() hashed the whole result again")

    monkeypatch.setattr("client_sdk._results.hashlib.sha256", no_second_pass)
    np.testing.assert_array_equal(assembler.value(), value)


def test_a_chunk_corrupted_in_transit_is_refused() -> None:
    stream = results.encode_stream({"k": [1, 2, 3]}, "json", True)
    assembler = ResultAssembler()
    header, chunk = _messages(stream)
    assembler.feed(header)
    assembler.feed(pb.GetJobResultResponse(chunk=b"[" + chunk.chunk[1:]))
    assert assembler.complete
    with pytest.raises(ComputeError, match="SHA-256"):
        assembler.value()


@pytest.mark.parametrize("corrupt", [False, True])
def test_a_resumed_stream_is_still_checked_as_it_arrives(corrupt: bool) -> None:
    value = np.arange(300_000)
    stream = results.encode_stream(value, "pickle", False)
    assembler = ResultAssembler()
    first = _messages(stream)
    for _ in range(5):  # the header and four chunks, then the connection drops
        assembler.feed(next(first))
    *second, last = _messages(stream, offset=assembler.received)
    for message in second:
        assembler.feed(message)
    chunk = bytearray(last.chunk)
    chunk[-1] ^= corrupt
    assembler.feed(pb.GetJobResultResponse(chunk=bytes(chunk)))
    assert assembler.complete and not assembler.restart
    if corrupt:
        with pytest.raises(ComputeError, match="SHA-256"):
            assembler.value()
    else:
        np.testing.assert_array_equal(assembler.value(), value)


def test_more_bytes_than_announced_are_refused() -> None:
    stream = results.encode_stream(list(range(1000)), "pickle", False)
    assembler = ResultAssembler()
    for message in _messages(stream):
        assembler.feed(message)
    assembler.feed(pb.GetJobResultResponse(chunk=b"extra"))
    assert assembler.complete and len(assembler.buffer) == stream.total_size
    with pytest.raises(ComputeError, match="not .* as announced"):
        assembler.value()


def test_a_stream_resent_from_an_earlier_offset_is_hashed_whole_at_the_end() -> None:
    value = list(range(20_000))
    stream = results.encode_stream(value, "pickle", False)
    assembler = ResultAssembler()
    first = _messages(stream, size=1000)
    for _ in range(4):  # the header and three chunks
        assembler.feed(next(first))
    # Not what the SDK asks for, but taken: a stream from before the bytes
    # received. The running hash no longer covers the buffer; value() hashes it.
    for message in _messages(stream, offset=1000, size=1000):
        assembler.feed(message)
    assert assembler.value() == value


# -- the server's result and upload -------------------------------------------


def test_an_arrow_stream_is_arrows_own_buffer() -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"a": range(1000), "b": [1.5] * 1000})
    stream = results.encode_stream(frame, "arrow", False)
    (segment,) = stream.segments
    assert type(segment.obj).__module__.startswith("pyarrow")
    data = results.to_arrow(frame)
    assert bytes(segment) == data
    assert stream.sha256 == hashlib.sha256(data).hexdigest()


async def _chunks(data: bytes, size: int):
    for start in range(0, len(data), size):
        yield data[start : start + size]
        await asyncio.sleep(0)


@pytest.mark.parametrize("step", [1, 100, 1 << 30])
def test_an_upload_is_hashed_while_it_arrives(monkeypatch, step: int) -> None:
    monkeypatch.setattr(objects, "HASH_STEP", step)
    data = bytes(range(256)) * 40
    sha = hashlib.sha256(data).hexdigest()
    received = asyncio.run(objects.receive(_chunks(data, 333), len(data), [len(data)], sha))
    assert received == data
    with pytest.raises(InvalidArgument, match="SHA-256"):
        asyncio.run(objects.receive(_chunks(data, 333), len(data), [], "0" * 64))
    with pytest.raises(InvalidArgument, match="ended after"):
        asyncio.run(objects.receive(_chunks(data[:-1], 333), len(data), [], sha))
    with pytest.raises(InvalidArgument, match="more than"):
        asyncio.run(objects.receive(_chunks(data + b"x", 333), len(data), [], sha))


def test_an_empty_upload_is_checked_too() -> None:
    sha = hashlib.sha256(b"").hexdigest()
    assert asyncio.run(objects.receive(_chunks(b"", 1), 0, [], sha)) == bytearray()
    assert asyncio.run(objects.receive(_chunks(b"", 1), 0, [], None)) == bytearray()


def test_an_upload_loads_from_its_bytearray() -> None:
    array = np.arange(1000)
    data, sizes, _ = _pickle.encode_object_pieces(array)
    loaded = objects.load_on_worker()(bytearray(bytes(data)), sizes)
    np.testing.assert_array_equal(loaded, array)


class _Future:
    def __init__(self, client: _Client, key: str) -> None:
        self.client, self.key = client, key


class _Client:
    def __init__(self, stall: bool = False) -> None:
        self.gathers: list[tuple[list[str], bool | None]] = []
        self.stall = stall

    async def gather(self, futures: list[_Future], direct: bool | None = None) -> list[str]:
        self.gathers.append(([f.key for f in futures], direct))
        if direct and self.stall:
            await asyncio.sleep(3600)
        return [f"value-{f.key}" for f in futures]


@pytest.mark.parametrize("direct", [True, False])
def test_large_results_are_fetched_directly_from_workers_when_asked(direct: bool) -> None:
    client = _Client()
    single = cluster_results.ClusterResult([_Future(client, "a")], "single", direct=direct)
    nested = cluster_results.ClusterResult(
        [_Future(client, "b"), (_Future(client, "c"),)], "plain", direct=direct
    )
    assert asyncio.run(single.fetch(large=True)) == "value-a"
    assert asyncio.run(cluster_results.fetch_many([single, nested], large=True)) == [
        "value-a",
        ["value-b", ("value-c",)],
    ]
    asking = True if direct else None
    assert client.gathers == [(["a"], asking), (["a", "b", "c"], asking)]
    # Small results take the scheduler's way, as Dask's client does by default.
    client.gathers.clear()
    assert asyncio.run(single.fetch()) == "value-a"
    assert client.gathers == [(["a"], None)]


def test_a_stalled_direct_gather_falls_back_to_the_scheduler(monkeypatch) -> None:
    monkeypatch.setattr(cluster_results, "DIRECT_GATHER_TIMEOUT", 0.05)
    client = _Client(stall=True)
    result = cluster_results.ClusterResult([_Future(client, "a")], "single", direct=True)
    assert asyncio.run(result.fetch(large=True)) == "value-a"
    assert client.gathers == [(["a"], True), (["a"], None)]


def test_pickled_streams_still_load_without_copies() -> None:
    value = np.arange(10_000)
    stream = results.encode_stream(value, "pickle", False)
    main, *buffers = stream.segments
    assert np.shares_memory(np.frombuffer(buffers[0], dtype=value.dtype), value)
    np.testing.assert_array_equal(pickle.loads(main, buffers=buffers), value)


# -- large results: the SDK's buffer and running hash, the worker's encoding ----


@pytest.mark.parametrize("mapped", [False, True])
def test_a_large_result_lands_in_a_private_map_and_is_hashed_in_a_thread(
    monkeypatch, mapped: bool
) -> None:
    import mmap
    import threading

    from client_sdk import _results

    monkeypatch.setattr(_results, "MAP_FROM_BYTES", 0 if mapped else 1 << 40)
    monkeypatch.setattr(_results, "HASH_BATCH", 64 * 1024)
    value = np.arange(300_000)
    stream = results.encode_stream(value, "pickle", False)
    assembler = ResultAssembler()
    hashers: list[str] = []
    for message in _messages(stream):
        assembler.feed(message)
        hashers += [t.name for t in threading.enumerate() if t.name.startswith("dask-compute-hash")]
    assert isinstance(assembler.buffer, mmap.mmap if mapped else bytearray)
    assert hashers, "no thread hashed the chunks while they arrived"
    result = assembler.value()
    np.testing.assert_array_equal(result, value)
    if mapped:  # the array is the map's memory, not a copy of it
        assert np.shares_memory(result, np.frombuffer(assembler.buffer, dtype=np.uint8))


def test_json_results_stay_in_a_bytearray(monkeypatch) -> None:
    from client_sdk import _results

    monkeypatch.setattr(_results, "MAP_FROM_BYTES", 0)
    stream = results.encode_stream({"k": list(range(1000))}, "json", True)
    assembler = ResultAssembler()
    for message in _messages(stream):
        assembler.feed(message)
    assert isinstance(assembler.buffer, bytearray)
    assert assembler.value() == {"k": list(range(1000))}


def test_a_corrupted_chunk_is_refused_when_hashed_in_a_thread(monkeypatch) -> None:
    from client_sdk import _results

    monkeypatch.setattr(_results, "MAP_FROM_BYTES", 0)
    monkeypatch.setattr(_results, "HASH_BATCH", 1000)
    stream = results.encode_stream(np.arange(50_000), "pickle", False)
    assembler = ResultAssembler()
    header, *chunks = _messages(stream, size=4096)
    assembler.feed(header)
    for index, message in enumerate(chunks):
        data = bytearray(message.chunk)
        if index == len(chunks) // 2:
            data[7] ^= 1
        assembler.feed(pb.GetJobResultResponse(chunk=bytes(data)))
    with pytest.raises(ComputeError, match="SHA-256"):
        assembler.value()


def test_the_running_hash_hashes_every_byte_counted_in_order(monkeypatch) -> None:
    from client_sdk import _results

    monkeypatch.setattr(_results, "HASH_BATCH", 10)
    data = bytes(range(256)) * 3
    buffer = bytearray(len(data))
    running = _results.RunningHash(buffer)
    for start in range(0, len(data), 7):
        buffer[start : start + 7] = data[start : start + 7]
        running.extend(len(data[start : start + 7]))
    assert running.hexdigest() == hashlib.sha256(data).hexdigest()
    assert running.hexdigest() == hashlib.sha256(data).hexdigest()  # asking again is the same
    small = _results.RunningHash(b"abc")
    small.extend(3)
    assert small.hexdigest() == hashlib.sha256(b"abc").hexdigest()


class _Worker:
    """What the worker's functions use of a Dask worker: its data."""

    def __init__(self, data: dict) -> None:
        self.data = data


def test_the_worker_encodes_hashes_and_slices_a_large_result() -> None:
    from server import worker_stream

    calls = worker_stream.worker_calls()
    value = np.arange(1_000_000)
    worker = _Worker({"x": value})

    async def scenario():
        opened = await calls["open"]("x", "t1", 1024, 60.0, dask_worker=worker)
        assert opened["segments"] is None and opened["sha256"] == ""
        expected = results.encode_stream(value, "pickle", False)
        assert opened["sizes"] == expected.segment_sizes
        pieces = []
        for index, size in enumerate(opened["sizes"]):
            for start in range(0, size, 300_000):
                stop = min(start + 300_000, size)
                pieces.append(bytes(await calls["read"]("t1", index, start, stop, 60.0, worker)))
        big = await calls["read"]("t1", 1, 0, 8, 60.0, dask_worker=worker)
        assert np.shares_memory(np.frombuffer(big, dtype=np.uint8), value), "a copy was made"
        digest = await calls["digest"]("t1", 60.0, dask_worker=worker)
        assert digest == expected.compute_sha256()
        assert b"".join(pieces) == b"".join(bytes(s) for s in expected.segments)
        assert await calls["drop"]("t1", dask_worker=worker) is True
        assert await calls["drop"]("t1", dask_worker=worker) is False
        with pytest.raises(KeyError):
            await calls["read"]("t1", 0, 0, 1, 60.0, dask_worker=worker)
        # Small results come whole with the first answer, hashed.
        worker.data["s"] = [1, 2, 3]
        whole = await calls["open"]("s", "t2", 1024, 60.0, dask_worker=worker)
        assert pickle.loads(whole["segments"][0]) == [1, 2, 3]
        assert whole["sha256"] == hashlib.sha256(whole["segments"][0]).hexdigest()
        assert "t2" not in worker._dask_compute_streams
        # A stream the server forgets is dropped after its time to live.
        await calls["open"]("x", "t3", 1024, 0.05, dask_worker=worker)
        await asyncio.sleep(0.2)
        assert "t3" not in worker._dask_compute_streams

    asyncio.run(scenario())


def test_a_worker_stream_plans_pieces_within_segments() -> None:
    from server.worker_stream import WorkerStream

    stream = WorkerStream(None, "t", [5, 0, 23], "", None)  # type: ignore[arg-type]
    assert stream.total_size == 28
    assert stream.pieces(0, 10) == [(0, 0, 5), (2, 0, 10), (2, 10, 20), (2, 20, 23)]
    assert stream.pieces(7, 10) == [(2, 2, 12), (2, 12, 22), (2, 22, 23)]
    assert stream.pieces(28, 10) == []


@pytest.mark.parametrize(
    "futures, shape, key",
    [
        ([_Future(None, "a")], "single", "a"),  # type: ignore[arg-type]
        (_Future(None, "a"), "plain", "a"),  # type: ignore[arg-type]
        ([_Future(None, "a")], "tuple", None),  # type: ignore[arg-type]
        ([_Future(None, "a"), _Future(None, "b")], "plain", None),  # type: ignore[arg-type]
        ([_Future(None, "a")], "plain", None),  # type: ignore[arg-type]
    ],
)
def test_only_one_futures_own_value_is_read_from_its_worker(futures, shape, key) -> None:
    result = cluster_results.ClusterResult(futures, shape, direct=True)
    assert result.single_key == key
    # Not pickled (a named call's JSON), or not direct: fetched here as before.
    assert asyncio.run(result.open_stream("json", False)) is None
    assert asyncio.run(result.open_stream("auto", True)) is None
    assert (
        asyncio.run(cluster_results.ClusterResult(futures, shape).open_stream("pickle", False))
        is None
    )
