"""The one rule for a job's exceptions, at each boundary it crosses without the core.

Each kind of exception a job's code may raise, raised in this thread, in a
pool thread, in a driver thread, in a process of the real ``processes``
pool, on an in-process Dask worker, while its payload is loaded, and
delivered to the coroutine that awaits the job.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import operator
import pickle
import uuid

import cloudpickle
import pytest
import pytest_asyncio

from server import _pickle, job_errors
from server.errors import InvalidPayload
from server.execution import Executors, Work
from server.pools import call_in


class Abort(BaseException):
    """A BaseException of the job's own, not an Exception."""


class Odd(Exception):
    """An ordinary exception of the job's own."""


#: What a job raises, and the start of the RuntimeError it fails with (None: itself).
KINDS = {
    "ordinary": (lambda: Odd("plain"), None),
    "stop": (lambda: StopIteration("s"), "the job raised StopIteration('s',)"),
    "exit": (lambda: SystemExit(3), "the job raised SystemExit(3,), reported as this error"),
    "interrupt": (lambda: KeyboardInterrupt(), "the job raised KeyboardInterrupt(), reported as"),
    "cancelled": (lambda: asyncio.CancelledError("c"), "the job raised CancelledError('c',)"),
    "generator": (lambda: GeneratorExit("g"), "the job raised GeneratorExit('g',)"),
    "own": (lambda: Abort("a"), "the job raised Abort('a',)"),
}


def raises(kind):
    """A job's function: raises an exception of ``kind`` (see KINDS)."""
    raise KINDS[kind][0]()


def assert_by_the_rule(error, kind):
    """``error`` is what a job raising ``kind`` must fail with."""
    message = KINDS[kind][1]
    if message is None:
        assert type(error) is Odd and str(error) == "plain"
    else:
        assert type(error) is RuntimeError, repr(error)
        assert str(error).startswith(message)


@pytest.mark.parametrize("kind", KINDS)
def test_the_rule_keeps_an_ordinary_exception_and_names_any_other(kind):
    original = KINDS[kind][0]()
    error = job_errors.job_exception(original)
    assert_by_the_rule(error, kind)
    if error is not original:
        assert error.__cause__ is original
        assert f"{type(original).__name__}" in getattr(error, job_errors.TRACEBACK_ATTRIBUTE)


def test_a_job_exception_whose_repr_fails_is_still_named():
    class Bad:
        def __repr__(self):
            raise SystemExit("no repr")

    error = job_errors.job_exception(Abort(Bad()))
    assert str(error) == "the job raised Abort(<unprintable>)"


@pytest.mark.parametrize("kind", KINDS)
def test_user_code_run_in_this_thread_raises_by_the_rule(kind):
    with pytest.raises(BaseException) as info:
        job_errors.run_user_code(raises, kind)
    assert_by_the_rule(info.value, kind)
    assert job_errors.run_user_code(lambda x, func: x + func, 1, func=2) == 3


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_a_pool_thread_hands_the_awaiting_task_an_ordinary_exception(kind):
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        task = asyncio.ensure_future(call_in(pool, raises, kind))
        with pytest.raises(BaseException) as info:
            await asyncio.wait_for(task, 10)
    assert_by_the_rule(info.value, kind)
    assert not task.cancelled(), "a job's CancelledError is not its caller's cancellation"


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_the_awaiting_coroutine_contains_what_got_past(kind):
    future = asyncio.get_running_loop().create_future()
    exc = KINDS[kind][0]()
    if isinstance(exc, StopIteration):
        with pytest.raises(TypeError):  # which is why it must not get this far
            future.set_exception(exc)
        return
    future.set_exception(exc)
    with pytest.raises(BaseException) as info:
        await job_errors.contain(future)
    if kind in ("cancelled", "generator"):
        # There they are the job's own cancellation or closing, and go on up.
        assert info.value is exc
    else:
        assert_by_the_rule(info.value, kind)


@pytest.mark.asyncio
async def test_contain_returns_the_value():
    assert await job_errors.contain(asyncio.sleep(0, "value")) == "value"


@pytest.mark.parametrize("kind", KINDS)
def test_a_pickled_call_in_a_child_sends_back_the_rule_s_exception_and_its_traceback(kind):
    ok, data, tb = job_errors.call_in_child(_pickle.dumps((raises, (kind,), {})))
    assert not ok
    assert_by_the_rule(pickle.loads(data), kind)
    assert "in raises" in tb, "the job's own frame is in the traceback sent back"


class _RaisesWhenPickled:
    def __reduce__(self):
        raise SystemExit(4)


class _RaisesWhenLoaded:
    def __init__(self, kind):
        self.kind = kind

    def __reduce__(self):
        return raises, (self.kind,)


def test_loading_the_call_and_pickling_the_result_in_a_child_follow_the_rule():
    ok, data, _ = job_errors.call_in_child(cloudpickle.dumps(_RaisesWhenLoaded("exit")))
    assert not ok and str(pickle.loads(data)).startswith("the job raised SystemExit(3,)")
    ok, data, _ = job_errors.call_in_child(_pickle.dumps((_RaisesWhenPickled, (), {})))
    assert not ok and str(pickle.loads(data)).startswith("the job raised SystemExit(4,)")
    ok, data, tb = job_errors.call_in_child(_pickle.dumps((divmod, (7, 2), {})))
    assert (ok, pickle.loads(data), tb) == (True, (3, 1), "")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("loader", [_pickle.load_call, _pickle.load_graph])
def test_anything_raised_while_loading_a_payload_refuses_it(kind, loader):
    with pytest.raises(InvalidPayload) as info:
        loader(cloudpickle.dumps(_RaisesWhenLoaded(kind)))
    name = type(KINDS[kind][0]()).__name__
    assert name in str(info.value) and "cannot load the payload" in str(info.value)


def test_a_module_missing_on_the_server_is_named():
    payload = pickle.dumps(operator.add).replace(b"_operator", b"no_such_m")  # same length
    with pytest.raises(InvalidPayload, match="module 'no_such_m' is not installed"):
        _pickle.load_call(payload)


def test_a_failed_job_s_record_keeps_its_type_message_traceback_and_exception():
    try:
        job_errors.run_user_code(raises, "stop")
    except RuntimeError as exc:
        error = job_errors.to_job_error(exc)
    assert error.type == "builtins.RuntimeError"
    assert error.message == "the job raised StopIteration('s',)"
    assert "in raises" in error.traceback and "StopIteration: s" in error.traceback
    assert isinstance(pickle.loads(error.pickled_exception), RuntimeError)
    try:
        raises("ordinary")
    except Odd as exc:
        error = job_errors.to_job_error(exc)
    assert error.type.endswith("test_job_errors.Odd") and error.message == "plain"
    assert "in raises" in error.traceback


# The pools, as the server runs them: no cluster (client None) for the local schedulers.


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pools():
    executors = Executors(None, threads=2, processes=1)
    await executors.warm_up()
    yield executors
    executors.close()


def _works(kind):
    return {
        "call": Work(call=(raises, (kind,), {})),
        "lazy": Work(call=(raises, (kind,), {}), lazy=True),
        "graph": Work(graph={"x": (raises, kind)}, keys="x"),
    }


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("work", ["call", "lazy", "graph"])
@pytest.mark.parametrize("scheduler", ["threads", "synchronous", "processes"])
@pytest.mark.parametrize("kind", KINDS)
async def test_each_local_scheduler_fails_a_job_by_the_rule(pools, scheduler, work, kind):
    running = asyncio.ensure_future(
        pools.run(_works(kind)[work], scheduler, f"job-{uuid.uuid4().hex}")
    )
    with pytest.raises(BaseException) as info:
        await asyncio.wait_for(running, 60)
    assert_by_the_rule(info.value, kind)
    assert not running.cancelled()
    if scheduler == "processes" and work == "call":
        assert "in raises" in getattr(info.value, job_errors.TRACEBACK_ATTRIBUTE)


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("kind", ["exit", "cancelled"])
async def test_a_payload_loaded_in_a_driver_thread_is_refused_whatever_it_raises(pools, kind):
    # As the core loads a large payload: in a driver thread.
    payload = cloudpickle.dumps(_RaisesWhenLoaded(kind))
    with pytest.raises(InvalidPayload):
        await pools.in_thread(_pickle.load_call, payload)


# The cluster: one in-process worker, as a LocalCluster(processes=False) has.


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster():
    from distributed import Client, LocalCluster

    async with (
        LocalCluster(
            n_workers=1,
            threads_per_worker=2,
            processes=False,
            dashboard_address=":0",
            scheduler_kwargs={"dashboard": False},
            asynchronous=True,
        ) as local,
        Client(local, asynchronous=True) as client,
    ):
        yield client


#: Unwrapped, an exit on an in-process worker would end this process: the
#: task's-error boundary is tried with the other kinds.
CLUSTER_CASES = [(kind, True) for kind in KINDS] + [
    (kind, False) for kind in KINDS if kind not in ("exit", "interrupt")
]


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(
    ("kind", "in_process"),
    CLUSTER_CASES,
    ids=[f"{kind}-{'wrapped' if wrapped else 'task-error'}" for kind, wrapped in CLUSTER_CASES],
)
async def test_the_cluster_fails_a_job_by_the_rule(cluster, kind, in_process):
    executors = Executors(cluster, threads=1, processes=1, in_process_workers=in_process)
    try:
        running = asyncio.ensure_future(
            executors.run(
                Work(call=(raises, (kind,), {})), "distributed", f"job-{uuid.uuid4().hex}"
            )
        )
        with pytest.raises(BaseException) as info:
            await asyncio.wait_for(running, 60)
    finally:
        executors.close()
    assert_by_the_rule(info.value, kind)
    assert not running.cancelled()
    assert "in raises" in job_errors.to_job_error(info.value).traceback
