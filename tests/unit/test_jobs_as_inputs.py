"""The small pieces of jobs as inputs: the SDK's references, the server's loading, the markers."""

from __future__ import annotations

import threading
import time

import pytest
from google.protobuf import json_format

from client_sdk import _convert, _pickle
from client_sdk.job import Job, JobLink
from client_sdk.types import JobInfo, JobState
from server import _pickle as server_pickle
from server import dependencies
from server.auth import ANONYMOUS
from server.core import JobRequest
from server.errors import FailedPrecondition, InvalidArgument, InvalidPayload
from server.jobs import JobKind
from server.jobs import JobState as ServerState
from server.registry import convert_json
from tests.helpers import inc, own_core, slowinc


def job(job_id: str) -> Job:
    link = JobLink(drive=lambda op: None, watch=lambda *a: iter(()), dispatch=lambda *a: None)
    info = JobInfo(
        job_id,
        JobState.SUCCEEDED,
        "threads",
        "pickled_call",
        "f",
        "",
        None,
        None,
        None,
        None,
        "",
        True,
    )
    return Job(link, info)


def test_the_pickler_writes_jobs_as_references_and_lists_them_once():
    a, b = job("a" * 32), job("b" * 32)
    payload = _pickle.dump_call(inc, (a, [b, a]), {"key": b})
    assert payload.job_ids == ["a" * 32, "b" * 32]
    assert payload.object_ids == []
    assert b"dask-compute-job:" + b"a" * 32 in payload.data
    results = {"dask-compute-job:" + "a" * 32: 1, "dask-compute-job:" + "b" * 32: 2}
    func, args, kwargs = server_pickle.load_call(payload.data, results)
    assert func is inc and args == (1, [2, 1]) and kwargs == {"key": 2}


def test_a_payload_using_an_unlisted_job_is_refused():
    payload = _pickle.dump_call(inc, (job("c" * 32),), {})
    with pytest.raises(InvalidPayload, match="job_ids"):
        server_pickle.load_call(payload.data, {})


def test_what_cannot_be_pickled_is_named_with_what_to_do():
    with pytest.raises(TypeError) as caught:
        _pickle.dump_call(inc, (1, threading.Lock()), {})
    message = str(caught.value)
    assert "argument 1" in message and "lock" in message
    assert "make the object inside the function" in message
    with pytest.raises(TypeError, match="keyword argument 'x'"):
        _pickle.dump_call(inc, (), {"x": threading.Lock()})


def test_a_graph_task_that_cannot_be_pickled_is_named():
    import dask

    total = dask.delayed(inc)(threading.Lock(), dask_key_name="with-a-lock")
    with pytest.raises(TypeError, match="the task 'with-a-lock' of the collection"):
        _pickle.dump_graph(total)
    with pytest.raises(TypeError, match="the task 'x' of the graph"):
        _pickle.dump_graph(({"x": (inc, threading.Lock())}, ["x"]))


def test_named_calls_carry_jobs_as_json_markers():
    spec = _convert.function_call_spec("add", [job("d" * 32), [job("e" * 32)]], {}, None)
    args = json_format.MessageToDict(spec.call.args)
    assert args == [{"$job": "d" * 32}, [{"$job": "e" * 32}]]


def test_the_cli_shows_a_jobs_inputs():
    from client_sdk.cli import _output

    record = JobInfo(
        "g" * 32,
        JobState.QUEUED,
        "threads",
        "pickled_call",
        "f",
        "",
        None,
        None,
        None,
        None,
        "",
        False,
        depends_on=("a1", "b2"),
    )
    assert "inputs:     a1 b2" in _output.job_details(record)
    assert _output.plain(record)["depends_on"] == ["a1", "b2"]


def test_json_markers_are_found_in_order_and_replaced():
    args = [{"$job": "x"}, {"nested": [{"$job": "y"}, {"$job": "x"}]}, {"$object": "z"}]
    assert dependencies.json_marker_ids(args) == ["x", "y"]
    replaced = dependencies.replace_json_markers(args, {"x": 1, "y": 2})
    assert replaced == [1, {"nested": [2, 1]}, {"$object": "z"}]
    with pytest.raises(InvalidArgument) as caught:
        dependencies.json_marker_ids([{"$job": 3}])
    assert caught.value.reason == "INVALID_JOB_INPUT"


def test_a_typed_parameter_takes_a_job_marker():
    assert convert_json({"$job": "x"}, int) == {"$job": "x"}


def call(func, *args) -> JobRequest:
    payload = _pickle.dump_call(func, args, {})
    return JobRequest(
        kind=JobKind.PICKLED_CALL,
        payload=payload.data,
        job_ids=tuple(payload.job_ids),
        scheduler="threads",
    )


@pytest.mark.asyncio
async def test_inputs_in_use_outlive_the_result_ttl():
    core = own_core(result_ttl=60.0)
    await core.start()
    try:
        a = await core.submit(call(inc, 1))
        await core.wait_job(a.job_id, 30)
        gate = await core.submit(call(slowinc, 0, 2.0))
        b = await core.submit(call(lambda x, _: x + 1, job(a.job_id), job(gate.job_id)))
        assert (await core.get_job(b.job_id)).state is ServerState.QUEUED
        await core.expire(time.time() + 120)  # a's result is past its ttl
        assert (await core.get_job(a.job_id)).result_available
        with pytest.raises(FailedPrecondition) as caught:
            await core.release(a.job_id, ANONYMOUS)
        assert caught.value.reason == "RESULT_IN_USE" and b.job_id in str(caught.value)
        record, _ = await core.wait_job(b.job_id, 30)
        assert record.state is ServerState.SUCCEEDED
        await core.expire(time.time() + 120)
        assert not (await core.get_job(a.job_id)).result_available
    finally:
        await core.close()
