"""Tokens, permissions, token rotation and limits through a real server process.

One server with a tokens file serves the module; each test names the callers
it needs. Raw gRPC stubs send exactly the metadata under test; one test goes
through the SDK's ``token=``.
"""

from __future__ import annotations

import os
import pathlib
import signal

import cloudpickle
import grpc
import pytest
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk._proto.compute.v1 import compute_pb2_grpc as pb_grpc
from tests.helpers import error_info, inc, running_server, wait_until

pytestmark = pytest.mark.integration

ALICE = "alice-token-0123456789abcdef"  # run,code
BOB = "bob-token-0123456789abcdef01"  # run
ROOT = "root-token-0123456789abcdef0"  # admin
CAROL = "carol-token-0123456789abcdef"  # run
DAVE = "dave-token-0123456789abcdef0"  # run; rotated by the SIGHUP test
DAVE_NEW = "dave-new-token-0123456789ab"

MAX_JOB_SECONDS = 4


def tokens_text(dave: str = DAVE) -> str:
    return (
        "# name permissions token\n"
        f"alice run,code {ALICE}\n"
        f"bob   run      {BOB}\n"
        f"root  admin    {ROOT}\n"
        f"carol run      {CAROL}\n"
        f"dave  run      {dave}\n"
    )


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    directory = tmp_path_factory.mktemp("security")
    tokens = directory / "tokens"
    tokens.write_text(tokens_text())
    tokens.chmod(0o600)
    args = [
        "--no-processes",
        "--n-workers",
        "1",
        "--threads-per-worker",
        "8",
        "--dashboard-address",
        "",
        "--local-processes",
        "1",
        "--local-threads",
        "4",
        "--tokens-file",
        str(tokens),
        "--max-jobs-per-caller",
        "2",
        "--max-pending-jobs",
        "4",
        "--max-job-seconds",
        str(MAX_JOB_SECONDS),
        "--max-message-bytes",
        str(4 * 1024 * 1024),
    ]
    with running_server(args, directory / "server.log") as server:
        server.tokens_path = tokens
        yield server
    assert server.process.returncode == 0, server.log()[-3000:]


@pytest.fixture(scope="module")
def channel(secured):
    with grpc.insecure_channel(secured.target) as ch:
        grpc.channel_ready_future(ch).result(timeout=30)
        yield ch


@pytest.fixture(scope="module")
def stub(channel):
    return pb_grpc.ComputeServiceStub(channel)


def auth(token: str | None):
    return None if token is None else (("authorization", f"Bearer {token}"),)


def named(function, *args, **fields):
    spec = pb.JobSpec(scheduler=fields.pop("scheduler", pb.SCHEDULER_DISTRIBUTED), **fields)
    spec.call.function = function
    spec.call.args.extend(list(args))
    return spec


def pickled(func, *args, **kwargs):
    return pb.JobSpec(
        pickled_call=pb.PickledCall(payload=cloudpickle.dumps((func, args, kwargs))),
        scheduler=pb.SCHEDULER_THREADS,
    )


def error_of(call, request, token, timeout=30):
    with pytest.raises(grpc.RpcError) as info:
        call(request, metadata=auth(token), timeout=timeout)
    return info.value.code(), info.value.details()


def submit(stub, spec, token):
    return stub.SubmitJob(pb.SubmitJobRequest(job=spec), metadata=auth(token), timeout=30).job


def wait(stub, job_id, token, timeout=30):
    return stub.WaitJob(
        pb.WaitJobRequest(job_id=job_id, timeout={"seconds": timeout}),
        metadata=auth(token),
        timeout=timeout + 10,
    )


def cancel(stub, job_id, token):
    stub.CancelJob(pb.CancelJobRequest(job_id=job_id), metadata=auth(token), timeout=30)


ALL_CALLS = {
    "GetClusterInfo": pb.GetClusterInfoRequest(),
    "ListFunctions": pb.ListFunctionsRequest(),
    "Run": pb.RunRequest(job=named("ping")),
    "SubmitJob": pb.SubmitJobRequest(job=named("ping")),
    "SubmitJobs": pb.SubmitJobsRequest(jobs=[named("ping")]),
    "GetJob": pb.GetJobRequest(job_id="x"),
    "WaitJob": pb.WaitJobRequest(job_id="x"),
    "CancelJob": pb.CancelJobRequest(job_id="x"),
    "ListJobs": pb.ListJobsRequest(),
}


@pytest.mark.parametrize(
    "token, message",
    [
        (None, "needs a credential: send the metadata 'authorization: Bearer <token>'"),
        ("not-a-valid-token-at-all", "bearer token is not valid"),
    ],
)
def test_every_rpc_needs_a_valid_token(stub, secured, token, message):
    for method, request in ALL_CALLS.items():
        code, details = error_of(getattr(stub, method), request, token)
        assert code == grpc.StatusCode.UNAUTHENTICATED, method
        assert message in details
    assert "not-a-valid-token-at-all" not in secured.log(), "tokens never reach the log"


def test_a_malformed_authorization_header_is_unauthenticated(stub):
    with pytest.raises(grpc.RpcError) as info:
        stub.ListJobs(
            pb.ListJobsRequest(), metadata=(("authorization", f"Token {ALICE}"),), timeout=30
        )
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "must read 'Bearer <token>'" in info.value.details()
    assert error_info(info.value).reason == "MALFORMED_AUTHORIZATION"


def test_health_and_reflection_need_no_token(channel):
    health = health_pb2_grpc.HealthStub(channel)
    response = health.Check(
        health_pb2.HealthCheckRequest(service="compute.v1.ComputeService"), timeout=10
    )
    assert response.status == health_pb2.HealthCheckResponse.SERVING
    services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert "compute.v1.ComputeService" in services


def test_run_permission_calls_named_functions_and_reads_cluster_info(stub):
    response = stub.Run(pb.RunRequest(job=named("add", 2, 3)), metadata=auth(BOB), timeout=30)
    assert response.job.state == pb.JOB_STATE_SUCCEEDED and response.job.owner == "bob"
    assert json_format.MessageToDict(response.result.json) == 5
    assert (
        stub.GetClusterInfo(
            pb.GetClusterInfoRequest(), metadata=auth(BOB), timeout=30
        ).cluster.n_workers
        == 1
    )
    assert stub.ListFunctions(pb.ListFunctionsRequest(), metadata=auth(BOB), timeout=30).functions


def test_pickled_work_and_graphs_need_the_code_permission(stub):
    import dask.array as da

    graph = pb.JobSpec(graph=pb.DaskGraph(payload=cloudpickle.dumps(da.ones(4).sum())))
    for token in (BOB, ROOT):  # admin does not imply code
        for call, request in [
            (stub.Run, pb.RunRequest(job=pickled(inc, 1))),
            (stub.SubmitJob, pb.SubmitJobRequest(job=graph)),
            (stub.SubmitJobs, pb.SubmitJobsRequest(jobs=[named("ping"), pickled(inc, 1)])),
        ]:
            code, details = error_of(call, request, token)
            assert code == grpc.StatusCode.PERMISSION_DENIED
            assert "needs the 'code' permission" in details
    response = stub.Run(pb.RunRequest(job=pickled(inc, 1)), metadata=auth(ALICE), timeout=30)
    assert response.job.state == pb.JOB_STATE_SUCCEEDED and response.job.owner == "alice"
    assert (
        stub.Run(pb.RunRequest(job=graph), metadata=auth(ALICE), timeout=30).job.state
        == pb.JOB_STATE_SUCCEEDED
    )


def test_uploading_objects_needs_the_code_permission(stub):
    import hashlib

    data = cloudpickle.dumps([1, 2, 3])
    header = pb.ObjectHeader(sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))

    def upload(token):
        messages = iter([pb.PutObjectRequest(header=header), pb.PutObjectRequest(chunk=data)])
        return stub.PutObject(messages, metadata=auth(token), timeout=30)

    for token in (BOB, ROOT):
        with pytest.raises(grpc.RpcError) as info:
            upload(token)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "needs the 'code' permission" in info.value.details()
    assert upload(ALICE).object.size_bytes == len(data)


class LeavesAMark:
    """Unpickling this creates a directory: proof that the server loaded it."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_a_pickled_payload_is_never_loaded_without_the_code_permission(stub, tmp_path):
    refused = tmp_path / "loaded-for-bob"
    payload = cloudpickle.dumps(LeavesAMark(refused))
    for call, request in [
        (stub.Run, pb.RunRequest(job=pb.JobSpec(pickled_call=pb.PickledCall(payload=payload)))),
        (stub.SubmitJob, pb.SubmitJobRequest(job=pb.JobSpec(graph=pb.DaskGraph(payload=payload)))),
        (
            stub.SubmitJobs,
            pb.SubmitJobsRequest(
                jobs=[named("ping"), pb.JobSpec(pickled_call=pb.PickledCall(payload=payload))]
            ),
        ),
    ]:
        assert error_of(call, request, BOB)[0] == grpc.StatusCode.PERMISSION_DENIED
    assert not refused.exists(), "the server unpickled a payload from a caller without 'code'"
    # The control: the same kind of payload from a caller with 'code' is loaded
    # (and then refused, for not being a call), which leaves the mark.
    loaded = tmp_path / "loaded-for-alice"
    request = pb.RunRequest(
        job=pb.JobSpec(pickled_call=pb.PickledCall(payload=cloudpickle.dumps(LeavesAMark(loaded))))
    )
    code, details = error_of(stub.Run, request, ALICE)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "payload must be a (callable" in details
    assert loaded.is_dir()


def test_callers_see_only_their_own_jobs_and_admin_sees_all(stub):
    job = submit(stub, named("sleep", 3), ALICE)
    try:
        for call, request in [
            (stub.GetJob, pb.GetJobRequest(job_id=job.job_id)),
            (stub.WaitJob, pb.WaitJobRequest(job_id=job.job_id)),
            (stub.CancelJob, pb.CancelJobRequest(job_id=job.job_id)),
        ]:
            code, details = error_of(call, request, BOB)
            assert code == grpc.StatusCode.NOT_FOUND and "no job with id" in details
        listed = stub.ListJobs(
            pb.ListJobsRequest(page_size=1000), metadata=auth(BOB), timeout=30
        ).jobs
        assert job.job_id not in {j.job_id for j in listed}
        assert (
            stub.GetJob(
                pb.GetJobRequest(job_id=job.job_id), metadata=auth(ALICE), timeout=30
            ).job.owner
            == "alice"
        )
        everyone = stub.ListJobs(
            pb.ListJobsRequest(page_size=1000), metadata=auth(ROOT), timeout=30
        ).jobs
        assert job.job_id in {j.job_id for j in everyone}
        response = stub.CancelJob(
            pb.CancelJobRequest(job_id=job.job_id, reason="admin says so"),
            metadata=auth(ROOT),
            timeout=30,
        )
        assert response.cancelled and response.job.state == pb.JOB_STATE_CANCELLED
        assert wait(stub, job.job_id, ALICE).job.cancel_reason == "admin says so"
    finally:
        cancel(stub, job.job_id, ROOT)


def test_the_sdk_sends_its_token(secured):
    import dask

    from client_sdk import ComputeClient, PermissionDenied

    work = dask.delayed(inc)(41)
    with ComputeClient(secured.target, token=ALICE, timeout=30) as client:
        assert client.run("add", 2, 3) == 5
        assert client.compute(work, scheduler="threads") == (42,)
    with ComputeClient(secured.target, token=BOB, timeout=30) as client:
        assert client.run("add", 1, 1) == 2
        with pytest.raises(PermissionDenied, match="'code' permission"):
            client.compute(work, scheduler="threads")
    with (
        ComputeClient(secured.target, timeout=30) as client,
        pytest.raises(PermissionDenied, match="needs a credential"),
    ):
        client.run("ping")


def _wait_for_log(server, text: str, count: int, timeout: float = 20) -> None:
    wait_until(
        lambda: server.log().count(text) >= count,
        timeout=timeout,
        message=lambda: f"{text!r} logged {count} times:\n{server.log()[-2000:]}",
    )


def test_sighup_rotates_tokens_without_dropping_running_jobs(stub, secured):
    running = submit(stub, named("sleep", 1.5), DAVE)
    reloads = secured.log().count("SIGHUP: tokens reloaded")
    try:
        secured.tokens_path.write_text(tokens_text(dave=DAVE_NEW))
        secured.process.send_signal(signal.SIGHUP)
        _wait_for_log(secured, "SIGHUP: tokens reloaded: auth=tokens(5)", reloads + 1)
        code, _ = error_of(stub.GetJob, pb.GetJobRequest(job_id=running.job_id), DAVE)
        assert code == grpc.StatusCode.UNAUTHENTICATED, "the old token is revoked"
        done = wait(stub, running.job_id, DAVE_NEW)
        assert done.job.state == pb.JOB_STATE_SUCCEEDED, "the running job survived the reload"
        assert json_format.MessageToDict(done.result.json) == 1.5
        # A broken file is not put in force: the tokens in force stay.
        failures = secured.log().count("SIGHUP: tokens not reloaded")
        secured.tokens_path.write_text("dave run short\n")
        secured.process.send_signal(signal.SIGHUP)
        _wait_for_log(secured, "SIGHUP: tokens not reloaded", failures + 1)
        assert (
            stub.GetJob(
                pb.GetJobRequest(job_id=running.job_id), metadata=auth(DAVE_NEW), timeout=30
            ).job.owner
            == "dave"
        )
        assert secured.process.poll() is None
    finally:
        secured.tokens_path.write_text(tokens_text())
        secured.process.send_signal(signal.SIGHUP)
        _wait_for_log(secured, "SIGHUP: tokens reloaded", reloads + 2)
    assert DAVE_NEW not in secured.log() and DAVE not in secured.log()


def test_max_jobs_per_caller_is_hit_and_recovered_from(stub):
    jobs = [submit(stub, named("sleep", 3), CAROL) for _ in range(2)]
    try:
        code, details = error_of(stub.SubmitJob, pb.SubmitJobRequest(job=named("ping")), CAROL)
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_jobs_per_caller" in details
        assert (
            stub.Run(pb.RunRequest(job=named("ping")), metadata=auth(BOB), timeout=30).job.state
            == pb.JOB_STATE_SUCCEEDED
        )
        cancel(stub, jobs[0].job_id, CAROL)
        ping = submit(stub, named("ping"), CAROL)  # the limit lifts when a job finishes
        assert wait(stub, ping.job_id, CAROL).job.state == pb.JOB_STATE_SUCCEEDED
    finally:
        for job in jobs:
            cancel(stub, job.job_id, CAROL)


def test_max_pending_jobs_is_hit_and_recovered_from(stub):
    jobs = [submit(stub, named("sleep", 3), token) for token in (CAROL, CAROL, BOB, BOB)]
    try:
        code, details = error_of(stub.SubmitJob, pb.SubmitJobRequest(job=named("ping")), ALICE)
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_pending_jobs" in details
        assert stub.GetJob(
            pb.GetJobRequest(job_id=jobs[0].job_id), metadata=auth(CAROL), timeout=30
        ).job.job_id
        cancel(stub, jobs[3].job_id, BOB)
        assert (
            stub.Run(pb.RunRequest(job=named("ping")), metadata=auth(ALICE), timeout=30).job.state
            == pb.JOB_STATE_SUCCEEDED
        )
    finally:
        for job in jobs:
            cancel(stub, job.job_id, ROOT)


def test_an_oversized_request_is_refused_by_grpc_and_the_server_goes_on(stub):
    huge = pb.JobSpec(pickled_call=pb.PickledCall(payload=b"x" * (5 * 1024 * 1024)))
    code, details = error_of(stub.SubmitJob, pb.SubmitJobRequest(job=huge), ALICE)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, details
    assert (
        stub.Run(pb.RunRequest(job=named("ping")), metadata=auth(ALICE), timeout=30).job.state
        == pb.JOB_STATE_SUCCEEDED
    )


def test_job_time_limits_fail_the_job_with_a_timeout_reason(stub):
    own = submit(stub, named("sleep", 3, timeout={"nanos": 300_000_000}), ALICE)
    capped = submit(stub, named("sleep", 30, timeout={"seconds": 600}), ALICE)
    try:
        record = wait(stub, own.job_id, ALICE).job
        assert record.state == pb.JOB_STATE_FAILED and record.error.type == "TimeoutError"
        assert "time limit of 0.3s" in record.error.message
        record = wait(stub, capped.job_id, ALICE).job
        assert record.state == pb.JOB_STATE_FAILED
        assert f"time limit of {MAX_JOB_SECONDS}s" in record.error.message
        ping = submit(stub, named("ping"), ALICE)  # timed-out jobs free their slots
        assert wait(stub, ping.job_id, ALICE).job.state == pb.JOB_STATE_SUCCEEDED
    finally:
        cancel(stub, capped.job_id, ALICE)
