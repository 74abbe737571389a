"""Jobs as inputs across two service replicas on one Dask cluster and one PostgreSQL.

A job submitted through replica B uses the result of a job run through
replica A: finished (its result published on the cluster, or kept in the
shared store when small) or still running (B waits for its end in the store).
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

from client_sdk import ComputeClient, JobNotFound
from tests.helpers import running_server, shared_cluster, slowinc

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ALICE = "alice-token-0123456789abcdef"
BOB = "bob-token-0123456789abcdef01"


@contextlib.contextmanager
def two_replicas(tmp_path):
    """Yield (alice's client of A, alice's client of B, bob's client of B)."""
    tokens = tmp_path / "tokens"
    tokens.write_text(f"alice run,code {ALICE}\nbob run,code {BOB}\n")
    tokens.chmod(0o600)
    with contextlib.ExitStack() as stack:
        port, database = shared_cluster(stack, tmp_path)
        args = [
            "--scheduler-address", f"tcp://127.0.0.1:{port}", "--local-processes", "1",
            "--tokens-file", str(tokens),
        ]  # fmt: skip
        env = {"DASK_COMPUTE_JOB_STORE": database}
        a = stack.enter_context(running_server(args, tmp_path / "a.log", env=env))
        b = stack.enter_context(running_server(args, tmp_path / "b.log", env=env))
        clients = [
            stack.enter_context(ComputeClient(target, token=token, timeout=120))
            for target, token in ((a.target, ALICE), (b.target, ALICE), (b.target, BOB))
        ]
        yield tuple(clients)


def test_a_job_through_one_replica_uses_a_job_of_the_other(tmp_path):
    with two_replicas(tmp_path) as (alice_a, alice_b, bob_b):
        big = alice_a.submit(np.ones, 2_000_000, scheduler="distributed")  # 16 MB: published
        small = alice_a.submit(sum, [1, 2, 3], scheduler="distributed")  # kept in the store
        assert small.result(timeout=120) == 6
        big.exception(timeout=120)
        assert alice_b.submit(np.sum, big, scheduler="distributed").result(timeout=120) == 2e6
        assert alice_b.submit(lambda x: x * 2, small, scheduler="threads").result(timeout=120) == 12
        running = alice_a.submit(slowinc, 1, delay=3, scheduler="distributed")
        after = alice_b.submit(slowinc, running, delay=0, scheduler="distributed")
        assert after.info().depends_on == (running.job_id,)
        assert after.result(timeout=120) == 3
        with pytest.raises(JobNotFound):
            bob_b.submit(np.sum, big)
