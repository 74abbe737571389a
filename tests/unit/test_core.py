"""The core on its own: a real in-process LocalCluster, no gRPC."""

from __future__ import annotations

import asyncio
import dataclasses
import operator
import pickle

import cloudpickle
import dask
import dask.array as da
import dask.bag as db
import pytest
import pytest_asyncio

from server.app import build_registry
from server.auth import Caller
from server.config import SCHEDULERS, Settings
from server.core import ComputeCore, JobRequest
from server.errors import (
    FailedPrecondition,
    FunctionNotFound,
    InvalidArgument,
    InvalidPayload,
    JobNotFound,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)
from server.jobs import JobKind, JobState
from tests.helpers import (
    CustomError,
    aborts,
    async_wait_until,
    cancels,
    inc,
    own_core,
    slowinc,
    stops,
    throws,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def core(tmp_path_factory):
    store = tmp_path_factory.mktemp("store") / "jobs.db"
    settings = Settings(
        job_store=f"sqlite:///{store}",
        n_workers=1,
        threads_per_worker=2,
        processes=False,
        dashboard_address="",
        local_threads=2,
        local_processes=1,
        result_ttl=60,
    )
    c = ComputeCore(settings, build_registry(settings))
    await c.start()
    yield c
    await c.close()


def call(function, *args, scheduler="", **kwargs):
    return JobRequest(
        kind=JobKind.FUNCTION,
        function=function,
        args=list(args),
        kwargs=kwargs,
        scheduler=scheduler,
    )


def pickled(func, *args, scheduler="", **kwargs):
    return JobRequest(
        kind=JobKind.PICKLED_CALL,
        payload=cloudpickle.dumps((func, args, kwargs)),
        scheduler=scheduler,
    )


def graph(obj, scheduler=""):
    return JobRequest(kind=JobKind.GRAPH, payload=cloudpickle.dumps(obj), scheduler=scheduler)


async def run_value(core, request):
    record = await core.run(request)
    assert record.state is JobState.SUCCEEDED, record.error
    encoded = await core.result(record.job_id, "pickle")
    return record, pickle.loads(encoded.pickle)


@pytest.mark.parametrize("scheduler", SCHEDULERS)
async def test_each_kind_of_job_on_each_scheduler(core, scheduler):
    record, value = await run_value(core, call("add", 2, 3, scheduler=scheduler))
    assert value == 5 and record.scheduler == scheduler and record.target == "add"
    _, value = await run_value(
        core, call("pi", samples=20_000, chunks=5_000, seed=1, scheduler=scheduler)
    )
    assert 2.9 < value < 3.4
    record, value = await run_value(core, pickled(inc, 41, scheduler=scheduler))
    assert value == 42 and record.target == "tests.helpers.inc"
    x = da.arange(100, chunks=10)
    _, value = await run_value(core, graph(x.sum(), scheduler=scheduler))
    assert value == 4950
    bag = db.from_sequence(range(10), npartitions=3).map(inc)
    _, value = await run_value(core, graph((bag.sum(), x.max()), scheduler=scheduler))
    assert value == (55, 99)
    dsk = {"a": 1, "b": (operator.add, "a", 10), "c": (inc, "b")}
    _, value = await run_value(core, graph((dsk, ["c", "b"]), scheduler=scheduler))
    assert tuple(value) == (12, 11)


async def test_default_scheduler_is_the_cluster(core):
    record = await core.run(call("ping"))
    assert record.scheduler == "distributed"
    encoded = await core.result(record.job_id)
    assert (encoded.format, encoded.json) == ("json", "pong")


async def test_failed_job_keeps_type_message_traceback_and_exception(core):
    for scheduler in SCHEDULERS:
        record = await core.run(pickled(_raise_custom, "bad", scheduler=scheduler))
        assert record.state is JobState.FAILED, scheduler
        assert record.error.type == "tests.helpers.CustomError"
        assert record.error.message == "bad"
        assert "_raise_custom" in record.error.traceback, scheduler
        exc = pickle.loads(record.error.pickled_exception)
        assert isinstance(exc, CustomError) and exc.args == ("bad",)
        with pytest.raises(FailedPrecondition, match="is failed; only succeeded jobs"):
            await core.result(record.job_id)


def _raise_custom(message):
    raise CustomError(message)


async def test_validation_errors(core):
    with pytest.raises(FunctionNotFound, match="no function named 'nope'"):
        await core.submit(call("nope"))
    with pytest.raises(InvalidArgument, match=r"fib\(\) argument 'n' must be integer"):
        await core.submit(call("fib", 20.5))
    with pytest.raises(InvalidArgument, match="unknown scheduler 'gpu'"):
        await core.submit(call("ping", scheduler="gpu"))
    with pytest.raises(InvalidPayload, match="cannot load the payload"):
        await core.submit(JobRequest(kind=JobKind.PICKLED_CALL, payload=b"\x80\x05garbage"))
    with pytest.raises(InvalidPayload, match="payload is empty"):
        await core.submit(JobRequest(kind=JobKind.GRAPH, payload=b""))
    with pytest.raises(InvalidPayload, match="must be a \\(callable, args tuple, kwargs dict\\)"):
        await core.submit(JobRequest(kind=JobKind.PICKLED_CALL, payload=cloudpickle.dumps([1, 2])))
    with pytest.raises(InvalidPayload, match="must be a Dask collection"):
        await core.submit(JobRequest(kind=JobKind.GRAPH, payload=cloudpickle.dumps(42)))
    with pytest.raises(JobNotFound):
        await core.get_job("0" * 32)
    with pytest.raises(InvalidArgument, match="job_id is required"):
        await core.get_job("")


async def test_payload_raising_on_load_is_invalid(core):
    with pytest.raises(InvalidPayload, match="RuntimeError: refuses to load"):
        await core.submit(JobRequest(kind=JobKind.PICKLED_CALL, payload=cloudpickle.dumps(_Bomb())))


class _Bomb:
    def __reduce__(self):
        return (_explode, ())


def _explode():
    raise RuntimeError("refuses to load")


async def test_large_payloads_load_off_the_event_loop(core):
    big = b"x" * (1 << 20)
    _record, value = await run_value(core, pickled(len, big, scheduler="threads"))
    assert value == 1 << 20


async def test_batch_is_validated_whole(core):
    before = await core.jobs.count()
    with pytest.raises(InvalidArgument, match=r"jobs\[1\]: .*fib"):
        await core.submit_many([call("ping"), call("fib", "x")])
    assert await core.jobs.count() == before, "no job of an invalid batch may be accepted"
    records = await core.submit_many([pickled(inc, i, scheduler="threads") for i in range(20)])
    values = []
    for r in records:
        record, _ = await core.wait_job(r.job_id, 30)
        values.append(pickle.loads((await core.result(record.job_id, "pickle")).pickle))
    assert values == list(range(1, 21))


@pytest.mark.parametrize("scheduler", ["distributed", "threads"])
async def test_wait_timeout_then_cancel_running_job(core, scheduler):
    record = await core.submit(pickled(slowinc, 1, delay=3, scheduler=scheduler))
    waited, timed_out = await core.wait_job(record.job_id, 0.2)
    assert timed_out and waited.state is JobState.RUNNING
    cancelled, did = await core.cancel_job(record.job_id, "test says stop")
    assert did and cancelled.state is JobState.CANCELLED
    assert cancelled.cancel_reason == "test says stop"
    again, did = await core.cancel_job(record.job_id)
    assert not did and again.state is JobState.CANCELLED
    finished, timed_out = await core.wait_job(record.job_id, 5)
    assert not timed_out and finished.state is JobState.CANCELLED
    with pytest.raises(FailedPrecondition):
        await core.result(record.job_id)


async def test_cancelled_distributed_job_leaves_the_cluster(core):
    record = await core.submit(pickled(slowinc, 1, delay=30, scheduler="distributed"))
    client = core.cluster.client

    async def on_the_scheduler() -> bool:
        tasks = await client.run_on_scheduler(
            lambda dask_scheduler: [str(k) for k in dask_scheduler.tasks]
        )
        return any(record.job_id in k for k in tasks)

    await async_wait_until(on_the_scheduler, 10, message="its task to reach the scheduler")
    await core.cancel_job(record.job_id)

    async def gone() -> bool:
        return not await on_the_scheduler()

    await async_wait_until(gone, 5, message="the cancelled job's task to leave the scheduler")


async def test_a_failed_distributed_job_leaves_the_cluster(core):
    record = await core.run(pickled(throws, "lost", scheduler="distributed"))
    assert record.state is JobState.FAILED
    from server.runner import task_key

    key = task_key(record.target, record.job_id)

    async def forgotten() -> bool:
        tasks = await core.cluster.client.run_on_scheduler(
            lambda dask_scheduler: [str(k) for k in dask_scheduler.tasks]
        )
        return key not in tasks

    await async_wait_until(forgotten, 5, message="the failed job's task to leave the scheduler")


async def test_run_cancelled_by_its_caller_cancels_the_job(core):
    task = asyncio.ensure_future(core.run(pickled(slowinc, 1, delay=10, scheduler="threads")))
    running = [await _running(core)]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    record, timed_out = await core.wait_job(running[0].job_id, 10)  # its end, once stored
    assert not timed_out and record.state is JobState.CANCELLED
    assert record.cancel_reason == "the caller of Run went away"


@pytest.mark.parametrize("scheduler", SCHEDULERS)
@pytest.mark.parametrize(
    ("func", "args", "raised"),
    [
        (stops, (), "StopIteration"),
        (cancels, (), "CancelledError"),
        (aborts, ("generator",), "GeneratorExit"),
        (aborts, ("own",), "Abort"),
    ],
)
async def test_a_job_raising_what_no_coroutine_should_see_fails_as_a_runtimeerror(
    core, scheduler, func, args, raised
):
    # A future refuses a StopIteration (on the local schedulers such a job
    # never ended), a job's CancelledError read as its Run's cancellation, and
    # other BaseExceptions escaped the job's handling, leaving it running.
    record = await asyncio.wait_for(core.run(pickled(func, *args, scheduler=scheduler)), 30)
    assert record.state is JobState.FAILED, record.cancel_reason
    assert record.error.type == "builtins.RuntimeError" and raised in record.error.message


async def _running(core, target="tests.helpers.slowinc"):
    async def running():
        jobs = (await core.list_jobs([JobState.RUNNING]))[0]
        return next((r for r in jobs if r.target == target), None)

    return await async_wait_until(running, 10, message=f"a job of {target} to run")


@pytest.mark.parametrize("scheduler", ["threads", "distributed"])
async def test_a_run_whose_job_is_cancelled_answers_with_the_cancelled_record(core, scheduler):
    # The job runs in the Run's own task; cancelling the job must end the job,
    # not the call, which answers with the record.
    task = asyncio.ensure_future(core.run(pickled(slowinc, 1, delay=10, scheduler=scheduler)))
    running = await _running(core)
    _, cancelled = await core.cancel_job(running.job_id, "enough")
    assert cancelled
    record = await asyncio.wait_for(task, 10)
    assert record.job_id == running.job_id and record.state is JobState.CANCELLED
    assert record.cancel_reason == "enough"
    if hasattr(task, "cancelling"):  # Python 3.11+: the call's task is not left cancelled
        assert task.cancelling() == 0
    assert (await core.run(call("ping", scheduler=scheduler))).state is JobState.SUCCEEDED


async def test_a_run_past_its_time_limit_answers_with_the_failed_record(core):
    request = dataclasses.replace(pickled(slowinc, 1, delay=10, scheduler="threads"), timeout=0.3)
    record = await asyncio.wait_for(core.run(request), 10)
    assert record.state is JobState.FAILED and record.error.type == "TimeoutError"


async def test_a_run_answers_once_its_record_is_stored_finished_in_one_write(core, monkeypatch):
    import sqlalchemy as sa

    import server.recording

    # A long delay: the record is written with the job's end, not when this runs out.
    monkeypatch.setattr(server.recording, "WAITED_WRITE_DELAY", 60.0)
    statements = []

    def seen(conn, cursor, statement, parameters, context, executemany):
        for row in parameters if executemany else [parameters]:
            statements.append((statement.split()[0], str(row)))

    sa.event.listen(core.jobs.engine, "before_cursor_execute", seen)
    try:
        record = await asyncio.wait_for(core.run(call("add", 1, 2, scheduler="distributed")), 30)
        assert record.state is JobState.SUCCEEDED
        # Recorded before told: committed by the time the Run answers.
        assert core.jobs.committed(record.job_id).done(), "answered before it was stored"
        inserts = [row for verb, row in statements if verb == "INSERT" and record.job_id in row]
        assert len(inserts) == 1 and "'succeeded'" in inserts[0], "stored once, finished"
    finally:
        sa.event.remove(core.jobs.engine, "before_cursor_execute", seen)
    with core.jobs.engine.connect() as conn:
        from server.store import jobs_table

        row = conn.execute(
            sa.select(jobs_table.c.state, jobs_table.c.seq).where(
                jobs_table.c.job_id == record.job_id
            )
        ).one()
    assert row.state == "succeeded" and row.seq == record.seq > 0


async def test_a_run_abandoned_while_its_record_is_written_is_cancelled_not_stuck(
    core, monkeypatch
):
    # With a store shared by replicas, a Run's record is stored before it starts.
    monkeypatch.setattr(core.replicas, "defers_waited_records", False)
    request = dataclasses.replace(
        pickled(slowinc, 1, delay=10, scheduler="threads"), request_id="abandoned-mid-write"
    )
    task = asyncio.ensure_future(core.run(request))
    for _ in range(10_000):  # until the record is being written
        if core.admission.writing():
            break
        await asyncio.sleep(0)
    assert core.admission.writing(), "the Run never reached the write of its record"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    async def recorded():
        found = [r for r in (await core.list_jobs())[0] if r.request_id == "abandoned-mid-write"]
        return found if found and found[0].state.finished else None

    records = await async_wait_until(recorded, 5, message="the abandoned Run's job to end")
    assert len(records) == 1, "the job was recorded once"
    assert records[0].state is JobState.CANCELLED, records[0]
    assert records[0].cancel_reason == "the caller of Run went away"


async def test_a_small_cluster_result_kept_with_its_record_leaves_the_cluster(core):
    from server.held_results import STORE_RESULT_DELAY

    record = await core.submit(pickled(inc, 41, scheduler="distributed"))
    await core.wait_job(record.job_id, 30)
    assert core.held.holds(record.job_id)
    from server.runner import task_key

    keys = {task_key(record.target, record.job_id)}
    await async_wait_until(
        lambda: not core.held.holds(record.job_id),
        100 * STORE_RESULT_DELAY,
        message="the cluster to let the result go once it is kept with the record",
    )
    assert pickle.loads((await core.result(record.job_id, "pickle")).pickle) == 42

    async def forgotten() -> bool:  # the scheduler forgets the key once no future holds it
        return not keys & set(await core.cluster.client.who_has())

    await async_wait_until(forgotten, 5, message="the scheduler to forget the result's key")


async def test_json_format_refused_for_non_json_result(core):
    record = await core.run(pickled(set, [1, 2], scheduler="threads"))
    with pytest.raises(FailedPrecondition, match="no JSON form"):
        await core.result(record.job_id, "json")
    encoded = await core.result(record.job_id, "pickle")
    assert pickle.loads(encoded.pickle) == {1, 2}


async def test_expiry_drops_results_then_records(core):
    record = await core.run(call("ping", scheduler="threads"))
    finished = (await core.get_job(record.job_id)).finish_time
    await core.expire(finished + core.settings.result_ttl + 1)
    assert (await core.get_job(record.job_id)).result_available is False
    with pytest.raises(NotFound, match="results are kept for 60s"):
        await core.result(record.job_id)
    await core.expire(finished + core.settings.job_ttl + 1)
    with pytest.raises(JobNotFound):
        await core.get_job(record.job_id)


async def test_cluster_info_matches_the_cluster(core):
    info = await core.cluster_info()
    assert info.n_workers == 1 and info.total_threads == 2
    assert info.worker_type == "threads"
    assert info.scheduler_address.startswith(("inproc://", "tcp://"))
    assert info.workers[0].nthreads == 2 and info.workers[0].memory_limit > 0
    versions = core.versions()
    assert versions["dask"] == dask.__version__
    assert set(versions) >= {"python", "dask", "distributed", "cloudpickle", "service"}


async def test_lazy_function_errors_fail_the_job(core):
    record = await core.run(call("pi", samples=0, scheduler="threads"))
    assert record.state is JobState.FAILED
    assert record.error.type == "builtins.ValueError"


async def test_drain_refuses_new_jobs_but_finishes_running_ones():
    c = own_core()
    with pytest.raises(Unavailable, match="still starting"):
        await c.submit(call("ping"))
    await c.start()
    try:
        running = await c.submit(pickled(slowinc, 1, delay=0.5, scheduler="threads"))
        c.drain()
        with pytest.raises(Unavailable, match="shutting down"):
            await c.submit(call("ping"))
        record, _ = await c.wait_job(running.job_id, 10)
        assert record.state is JobState.SUCCEEDED
        assert pickle.loads((await c.result(record.job_id, "pickle")).pickle) == 2
    finally:
        await c.close()


async def test_close_cancels_unfinished_jobs():
    c = own_core()
    await c.start()
    record = await c.submit(pickled(slowinc, 1, delay=30, scheduler="distributed"))
    waited = asyncio.ensure_future(c.run(pickled(slowinc, 2, delay=30, scheduler="threads")))

    async def both_running() -> bool:
        return len((await c.list_jobs([JobState.RUNNING]))[0]) == 2

    await async_wait_until(both_running, 10, message="both jobs to run")
    await c.close()
    final = c.jobs.cached(record.job_id)
    assert final.state is JobState.CANCELLED
    assert final.cancel_reason == "the server shut down"
    answered = await asyncio.wait_for(waited, 10)  # the Run answers: its job was cancelled
    assert answered.state is JobState.CANCELLED
    assert answered.cancel_reason == "the server shut down"


ALICE = Caller("alice", frozenset({"run", "code"}))
BOB = Caller("bob", frozenset({"run"}))
ROOT = Caller("root", frozenset({"admin"}))


class _LeavesAMark:
    """Loading this pickle creates a file: proof that it was loaded."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (_touch, (self.path,))


def _touch(path):
    open(path, "w").close()
    return (inc, (1,), {})


async def test_pickled_work_needs_code_and_is_never_loaded_without_it(core, tmp_path):
    mark = tmp_path / "loaded"
    request = JobRequest(
        kind=JobKind.PICKLED_CALL,
        payload=cloudpickle.dumps(_LeavesAMark(str(mark))),
        scheduler="threads",
    )
    with pytest.raises(PermissionDenied, match="'bob' may call named functions only"):
        await core.submit(request, BOB)
    with pytest.raises(PermissionDenied):
        await core.submit_many([call("ping"), request], BOB)
    with pytest.raises(PermissionDenied):
        await core.submit(graph(da.ones(3).sum()), BOB)
    assert not mark.exists(), "the payload was unpickled for a caller without 'code'"
    record = await core.run(request, ALICE)
    assert mark.exists() and record.state is JobState.SUCCEEDED
    assert (await core.run(call("ping", scheduler="threads"), BOB)).state is JobState.SUCCEEDED
    with pytest.raises(PermissionDenied, match="lacks the 'run' permission"):
        await core.submit(call("ping"), Caller("nobody", frozenset()))


async def test_callers_see_and_cancel_only_their_own_jobs(core):
    mine = await core.submit(pickled(slowinc, 1, delay=2, scheduler="threads"), ALICE)
    assert mine.owner == "alice"
    for attempt in (
        lambda: core.get_job(mine.job_id, BOB),
        lambda: core.wait_job(mine.job_id, 0.1, BOB),
        lambda: core.cancel_job(mine.job_id, "", BOB),
        lambda: core.result(mine.job_id, "auto", BOB),
    ):
        with pytest.raises(JobNotFound, match="no job with id"):
            result = attempt()
            if asyncio.iscoroutine(result):
                await result
    assert (await core.get_job(mine.job_id, ALICE)).job_id == mine.job_id

    async def listed(caller) -> set[str]:
        return {r.job_id for r in (await core.list_jobs(caller=caller, page_size=1000))[0]}

    assert mine.job_id not in await listed(BOB)
    assert mine.job_id in await listed(ALICE)
    assert mine.job_id in await listed(ROOT)
    _, cancelled = await core.cancel_job(mine.job_id, "admin says so", ROOT)
    assert cancelled and (await core.get_job(mine.job_id, ALICE)).cancel_reason == "admin says so"


async def test_request_ids_are_per_caller(core):
    request = dataclasses.replace(call("add", 1, 2, scheduler="threads"), request_id="same-key")
    a1 = await core.submit(request, ALICE)
    a2 = await core.submit(request, ALICE)
    b1 = await core.submit(request, BOB)
    assert a1.job_id == a2.job_id != b1.job_id


async def test_limits_refuse_with_resource_exhausted_and_recover():
    c = own_core(local_threads=4, max_pending_jobs=3, max_jobs_per_caller=2)
    await c.start()
    try:
        slow = pickled(slowinc, 1, delay=1, scheduler="threads")
        a = [await c.submit(slow, ALICE) for _ in range(2)]
        with pytest.raises(
            ResourceExhausted, match="caller 'alice' has 2 unfinished jobs .*max_jobs_per_caller"
        ):
            await c.submit(slow, ALICE)
        await c.submit(call("sleep", 1, scheduler="threads"), BOB)
        with pytest.raises(
            ResourceExhausted, match="the server has 3 unfinished jobs .*max_pending_jobs"
        ):
            await c.submit(call("ping"), ROOT)
        with pytest.raises(ResourceExhausted):
            await c.submit_many([call("ping"), call("ping")], ROOT)
        for record in a:
            await c.wait_job(record.job_id, 10, ALICE)
        assert (await c.run(slow, ALICE)).state is JobState.SUCCEEDED, (
            "the limit lifts as jobs finish"
        )
    finally:
        await c.close()


async def test_metrics_count_jobs_by_kind_state_and_scheduler(core):
    registry = core.metrics.registry

    def value(name, **labels):
        return registry.get_sample_value(name, labels) or 0.0

    before_ok = value(
        "dask_compute_jobs_finished_total", state="succeeded", scheduler="synchronous"
    )
    before_failed = value(
        "dask_compute_jobs_finished_total", state="failed", scheduler="synchronous"
    )
    before_submitted = value(
        "dask_compute_jobs_submitted_total", kind="pickled_call", scheduler="synchronous"
    )
    await core.run(pickled(inc, 1, scheduler="synchronous"))
    await core.run(pickled(_raise_custom, "x", scheduler="synchronous"))
    assert (
        value("dask_compute_jobs_submitted_total", kind="pickled_call", scheduler="synchronous")
        == before_submitted + 2
    )
    assert (
        value("dask_compute_jobs_finished_total", state="succeeded", scheduler="synchronous")
        == before_ok + 1
    )
    assert (
        value("dask_compute_jobs_finished_total", state="failed", scheduler="synchronous")
        == before_failed + 1
    )
    assert value("dask_compute_job_duration_seconds_count", scheduler="synchronous") >= 2
    assert value("dask_compute_cluster_workers") == 1
    assert value("dask_compute_cluster_threads") == 2
    assert registry.get_sample_value("dask_compute_jobs_pending") is not None


@pytest.mark.parametrize("scheduler", SCHEDULERS)
async def test_progress_counts_dask_tasks(core, scheduler):
    delayed = [dask.delayed(slowinc)(i, delay=0.3) for i in range(4)]
    job = await core.submit(graph(dask.delayed(sum)(delayed), scheduler=scheduler))
    seen = []
    while not (await core.get_job(job.job_id)).state.finished:
        seen.append(await core.progress(job.job_id))
        await asyncio.sleep(0.1)
    done, total = await core.progress(job.job_id)
    assert (await core.get_job(job.job_id)).state is JobState.SUCCEEDED
    assert total >= 5 and done == total, (scheduler, seen)
    partial = [d for d, t in seen if t and 0 < d < t]
    if scheduler != "processes":  # dask's processes scheduler hands tasks out in batches of 6
        assert partial, f"no partial progress seen on {scheduler}: {seen}"
    assert [d for d, _ in seen] == sorted(d for d, _ in seen), "progress never goes back"
    call_job = await core.run(call("ping", scheduler=scheduler))
    assert await core.progress(call_job.job_id) == (1, 1)


async def test_hand_written_graphs_with_the_same_keys_do_not_share_data(core):
    first = await core.run(graph(({"x": 1, "y": (inc, "x")}, "y"), scheduler="distributed"))
    second = await core.run(graph(({"x": 10, "y": (inc, "x")}, "y"), scheduler="distributed"))
    values = [pickle.loads((await core.result(r.job_id, "pickle")).pickle) for r in (first, second)]
    assert values == [2, 11], "the second job must not get the first job's 'y'"
    nested = await core.run(
        graph(({("a", 0): 1, ("a", 1): 2, "s": (sum, [("a", 0), ("a", 1)])}, [["s"], [("a", 1)]]))
    )
    assert pickle.loads((await core.result(nested.job_id, "pickle")).pickle) == [[3], [2]]


async def test_the_server_collects_garbage_less_often_and_never_scans_start_up():
    import gc

    from server.app import GC_YOUNG_THRESHOLD, _tune_gc

    before = gc.get_threshold()
    try:
        _tune_gc()
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *before[1:])
        assert gc.get_freeze_count() > 1000, "what start-up made is left out of collections"
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
