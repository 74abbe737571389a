"""The SDK's local pieces: Dask graph hand-off, batching, CLI output (no server)."""

from __future__ import annotations

import io
import pickle

import dask
import dask.array as da
import dask.bag as db
import pytest

from client_sdk import ComputeClient, JobState, _dask
from client_sdk._ops import jobs as job_ops
from client_sdk.cli import _output as cli_output
from client_sdk.types import JobError, JobInfo
from tests.helpers import inc


def test_dask_hands_scheduler_functions_an_expression_that_becomes_a_graph() -> None:
    seen = {}

    def scheduler(dsk, keys, **kwargs):
        graph = _dask.graph(dsk)
        seen["type"], seen["graph"] = type(dsk), graph
        return dask.get(graph, keys)

    x = da.ones((4, 4), chunks=2).sum()
    assert x.compute(scheduler=scheduler) == 16
    assert not issubclass(seen["type"], dict)  # modern dask passes an expression
    assert isinstance(seen["graph"], dict)
    assert pickle.loads(pickle.dumps(seen["graph"])).keys() == seen["graph"].keys()


def test_graphs_given_as_mappings_are_kept() -> None:
    graph = {"x": 1, "y": (inc, "x")}
    assert _dask.graph(graph) is graph
    hlg = db.from_sequence([1, 2]).__dask_graph__()
    assert _dask.graph(hlg) is hlg
    with pytest.raises(TypeError, match="expected a Dask graph"):
        _dask.graph(42)


def test_unpack_finds_collections_and_puts_their_values_back() -> None:
    x = da.ones(3, chunks=3).sum()
    collections, repack = _dask.unpack(({"a": x, "b": [x, 7]}, "plain"), traverse=True)
    assert len(collections) >= 1
    values = [f"v{i}" for i in range(len(collections))]
    packed = repack(values)
    assert packed[1] == "plain" and packed[0]["b"][1] == 7
    assert packed[0]["a"] == "v0"


def test_map_batches_are_cut_by_count_and_by_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = iter([(i,) for i in range(5)])
    batches = [job_ops._next_batch(calls, inc, {}, "threads", 2) for _ in range(4)]
    assert [len(b) for b in batches] == [2, 2, 1, 0]
    monkeypatch.setattr(job_ops, "MAX_BATCH_BYTES", 1)
    calls = iter([(i,) for i in range(3)])
    assert len(job_ops._next_batch(calls, inc, {}, None, 100)) == 1


def test_map_refuses_a_bad_batch_size_before_any_call() -> None:
    with ComputeClient("127.0.0.1:1", timeout=0.5) as client:
        for size in (0, 10_001):
            with pytest.raises(ValueError, match="batch_size"):
                client.map(inc, [1], batch_size=size)


def test_the_spinner_draws_on_a_terminal_and_clears_its_line() -> None:
    stream = io.StringIO()
    progress = cli_output.Progress("job 1", stream=stream, tty=True, quiet_for=0)
    progress.tick()
    progress.tick()
    progress.finish()
    text = stream.getvalue()
    assert text.startswith("\r| waiting for job 1 (") and "\r/ waiting for job 1 (" in text
    assert text.endswith("\r\x1b[K") and "\n" not in text


def test_off_a_terminal_progress_is_a_plain_line_now_and_then() -> None:
    stream = io.StringIO()
    progress = cli_output.Progress("job 1", stream=stream, tty=False, quiet_for=0, every=3600)
    for _ in range(5):
        progress.tick()
    progress.finish()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("waiting for job 1 (") and "\r" not in lines[0]


def test_short_waits_show_nothing() -> None:
    stream = io.StringIO()
    progress = cli_output.Progress("job 1", stream=stream, tty=True, quiet_for=60)
    progress.tick()
    progress.finish()
    assert stream.getvalue() == ""


def test_job_table_and_details() -> None:
    import datetime

    t0 = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    job = JobInfo(
        "abc",
        JobState.FAILED,
        "threads",
        "function",
        "fail",
        "weekly",
        t0,
        t0,
        t0 + datetime.timedelta(seconds=1.5),
        JobError("builtins.ValueError", "boom", "tb"),
        "",
        False,
    )
    table = cli_output.job_table([job]).splitlines()
    assert table[0].split() == [
        "JOB",
        "ID",
        "STATE",
        "SCHEDULER",
        "KIND",
        "TARGET",
        "SUBMITTED",
        "DURATION",
        "NAME",
    ]
    assert table[1].split()[:5] == ["abc", "failed", "threads", "function", "fail"]
    assert table[1].endswith("1.500s    weekly")
    details = cli_output.job_details(job)
    assert "error:      builtins.ValueError: boom" in details
    assert cli_output.plain(job)["error"] == {
        "type": "builtins.ValueError",
        "message": "boom",
        "traceback": "tb",
    }
