"""Uploaded objects through two service replicas on one Dask cluster and one PostgreSQL.

Real parts only: a ``dask scheduler`` and ``dask worker`` processes, a private
PostgreSQL server, two ``dask-compute serve`` replicas sharing both, and the
SDK. An object uploaded through one replica is published on the cluster as a
Dask dataset, so the other replica serves it, and deleting or expiring it
anywhere ends it everywhere.
"""

from __future__ import annotations

import contextlib
import re
import urllib.request

import distributed
import grpc
import numpy as np
import pytest

from client_sdk import ComputeClient, NotFound
from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk._proto.compute.v1 import compute_pb2_grpc as pb_grpc
from server.objects import dataset_name
from tests.helpers import free_port, running_server, shared_cluster, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ALICE = "alice-token-0123456789abcdef"
BOB = "bob-token-0123456789abcdef01"


@contextlib.contextmanager
def replicas(tmp_path, extra_a=(), extra_b=()):
    """Yield (scheduler address, replica A, replica B, B's metrics port), sharing one
    cluster of two workers and one PostgreSQL job store; alice and bob may upload."""
    tokens = tmp_path / "tokens"
    tokens.write_text(f"alice run,code {ALICE}\nbob run,code {BOB}\n")
    tokens.chmod(0o600)
    metrics_b = free_port()
    with contextlib.ExitStack() as stack:
        port, database = shared_cluster(stack, tmp_path)
        args = [
            "--scheduler-address", f"tcp://127.0.0.1:{port}", "--local-processes", "1",
            "--tokens-file", str(tokens), "--functions", "tests.functions",
        ]  # fmt: skip
        env = {"DASK_COMPUTE_JOB_STORE": database}
        a = stack.enter_context(running_server([*args, *extra_a], tmp_path / "a.log", env=env))
        b_args = [*args, "--metrics-port", str(metrics_b), *extra_b]
        b = stack.enter_context(running_server(b_args, tmp_path / "b.log", env=env))
        yield f"tcp://127.0.0.1:{port}", a, b, metrics_b


@contextlib.contextmanager
def alice_on_both(tmp_path, extra_a=(), extra_b=()):
    """:func:`replicas`, with alice's client of each and a Dask client of the
    cluster (its two workers up); yields (a, b, alice's A, alice's B, Dask client)."""
    with (
        replicas(tmp_path, extra_a, extra_b) as (scheduler, a, b, _),
        contextlib.ExitStack() as stack,
    ):
        alice_a = stack.enter_context(ComputeClient(a.target, token=ALICE, timeout=60))
        alice_b = stack.enter_context(ComputeClient(b.target, token=ALICE, timeout=60))
        dask_client = stack.enter_context(distributed.Client(scheduler, timeout=30))
        dask_client.wait_for_workers(2, timeout=60)
        yield a, b, alice_a, alice_b, dask_client


def datasets(dask_client):
    """The names of the datasets published on the cluster, asked of its scheduler."""
    return set(dask_client.list_datasets())


def put_objects_answered(metrics_port):
    """How many PutObject calls the replica answered (from its /metrics)."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    counts = re.findall(r'dask_compute_rpcs_total\{[^}]*method="PutObject"[^}]*\} (\S+)', text)
    return sum(float(c) for c in counts)


def test_an_object_uploaded_through_one_replica_is_used_and_deleted_through_the_other(tmp_path):
    with replicas(tmp_path) as (scheduler, a, b, metrics_b):
        array = np.arange(500_000, dtype="float64")
        expected = float(array.sum())
        with contextlib.ExitStack() as stack:
            alice_a = stack.enter_context(ComputeClient(a.target, token=ALICE, timeout=60))
            alice_b = stack.enter_context(ComputeClient(b.target, token=ALICE, timeout=60))
            bob_a = stack.enter_context(ComputeClient(a.target, token=BOB, timeout=60))
            bob_b = stack.enter_context(ComputeClient(b.target, token=BOB, timeout=60))

            dask_client = stack.enter_context(distributed.Client(scheduler, timeout=30))
            dask_client.wait_for_workers(2, timeout=60)

            ref = alice_a.scatter(array)
            name = dataset_name("alice", ref.object_id)
            assert name in datasets(dask_client), "published for the other replicas"

            # Through B: the skip-upload check finds it, so nothing is sent.
            assert alice_b.scatter(array) == ref
            assert put_objects_answered(metrics_b) == 0, "B received no upload"
            wait_until(lambda: "event=adopted" in b.log(), timeout=10, message="B's log")
            assert "event=stored" not in b.log()
            assert alice_b.submit(np.sum, ref).result(timeout=60) == expected
            assert alice_b.submit(np.sum, ref, scheduler="threads").result(timeout=60) == expected
            assert alice_b.run("array_sum", ref) == expected

            # Objects are private to their caller, on every replica.
            for bob in (bob_a, bob_b):
                with pytest.raises(NotFound, match=re.escape(ref.object_id)):
                    bob.submit(np.sum, ref).result(timeout=30)
            assert bob_b.scatter(array) == ref, "bob uploads his own copy of the same bytes"
            assert put_objects_answered(metrics_b) == 1
            assert dataset_name("bob", ref.object_id) in datasets(dask_client)
            assert bob_b.delete_object(ref) is True
            assert alice_b.submit(np.max, ref).result(timeout=60) == array.max(), (
                "bob's delete leaves alice's object alone"
            )

            # A malformed id is refused through either replica.
            with grpc.insecure_channel(b.target) as channel:
                stub = pb_grpc.ComputeServiceStub(channel)
                with pytest.raises(grpc.RpcError) as bad:
                    stub.GetObject(
                        pb.GetObjectRequest(object_id="sha256:nothex"),
                        metadata=(("authorization", f"Bearer {ALICE}"),),
                        timeout=10,
                    )
                assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert "64 hex digits" in bad.value.details()

            # Deleted through B: gone through A too, with a message saying what to do.
            assert alice_b.delete_object(ref) is True
            assert name not in datasets(dask_client)
            with pytest.raises(NotFound) as gone:
                alice_a.submit(np.sum, ref).result(timeout=30)
            assert "was deleted" in str(gone.value) and "upload it with PutObject" in str(
                gone.value
            )
            wait_until(lambda: "event=gone" in a.log(), timeout=10, message="A to drop its copy")
            assert alice_a.delete_object(ref) is False
            assert alice_b.delete_object(ref) is False

            # Uploaded again (through B this time), it serves through A again.
            assert alice_b.scatter(array) == ref
            assert alice_a.submit(np.sum, ref).result(timeout=60) == expected


def test_an_object_expired_on_its_replica_is_gone_through_the_other(tmp_path):
    # A keeps objects for 1s unused; its janitor looks every second.
    one_second = ["--object-ttl", "1"]
    with alice_on_both(tmp_path, one_second) as (a, b, alice_a, alice_b, dask_client):
        ref = alice_a.scatter([1, 2, 3])
        assert alice_b.submit(sum, ref).result(timeout=60) == 6, "B adopted it"
        name = dataset_name("alice", ref.object_id)
        wait_until(
            lambda: name not in datasets(dask_client),
            timeout=90,
            message="A's janitor to expire and unpublish the object",
        )
        wait_until(
            lambda: "expired 1 objects unused for 1s" in a.log(), timeout=10, message="A's log"
        )
        with pytest.raises(NotFound, match="expired after"):
            alice_b.submit(sum, ref).result(timeout=30)
        # B's next sweep (or that use) dropped its adopted copy.
        wait_until(
            lambda: "event=gone" in b.log() or "deleted or expired through other" in b.log(),
            timeout=60,
            message="B to drop its copy",
        )


def test_an_object_lives_while_used_through_any_replica_and_ends_unused_without_its_uploader(
    tmp_path,
):
    # Both keep objects 3s unused; their janitors look every 1.5s.
    ttl = ["--object-ttl", "3"]
    with alice_on_both(tmp_path, ttl, ttl) as (a, b, alice_a, alice_b, dask_client):
        ref = alice_a.scatter([1, 2, 3])
        name = dataset_name("alice", ref.object_id)

        # Used through B alone (every half second, so never unused for 3s there)
        # until A lets its own copy go: the object lives on, and A takes it up again.
        def used_through_b_until_a_lets_go():
            assert alice_b.submit(sum, ref).result(timeout=30) == 6
            return "expired 1 objects unused for 3s" in a.log()

        wait_until(
            used_through_b_until_a_lets_go,
            timeout=20,
            interval=0.5,
            message="A to expire its copy while B uses the object",
        )
        assert name in datasets(dask_client), "its uses through B kept it published"
        assert alice_a.submit(sum, ref).result(timeout=30) == 6

        # The replica it was uploaded through stops; unused, it ends through B.
        a.stop()
        wait_until(
            lambda: name not in datasets(dask_client),
            timeout=30,
            message="B's janitor to unpublish the object unused through every replica",
        )
        # (B's janitor, or A's in its last moments: either may take it. Logs
        # are written in batches, a little after the fact.)
        unpublished = "unpublished 1 objects unused for 3s through every replica"
        wait_until(
            lambda: unpublished in b.log() + a.log(), timeout=10, message="the janitor's log"
        )
        with pytest.raises(NotFound, match="expired after"):
            alice_b.submit(sum, ref).result(timeout=30)
