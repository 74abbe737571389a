"""The soak section: minutes of mixed load, with every job the service accepted accounted for.

A ``dask-compute serve`` of two worker processes takes a random mix of work
from concurrent callers (threads, each with its own client): trivial named
calls and pickled calls on every scheduler, sleeps, jobs that raise, Dask
array reductions, jobs cancelled by their caller, jobs past their own time
limit, ``Run`` calls whose deadline passes, and callers that close their
channel mid-wait. Every few seconds one Dask worker process is killed with
SIGKILL (the worker, found by the port it listens on, never the nanny, which
restarts it).

Afterwards every job the service accepted (ids from its answers; ``Run`` calls
cut off before an answer are found by the job name they carried) must be in a
final state, through ``GetJob``/``ListJobs``: succeeded, failed with a reason,
or cancelled with a reason. None may be missing or still queued or running,
and the server's own count of accepted jobs (its Prometheus counter) must not
exceed what it lists. The server's RSS is sampled after a warm-up, every
second, and at the end; trivial jobs are timed throughout.

The mix is drawn from a seeded RNG; the seed is printed, and
``BENCH_SOAK_SEED=N`` replays the same choices (thread timing still varies).
Job records go where a server's go by default, a SQLite file (in a temporary
folder of the soak's own); ``BENCH_SOAK_STORE=memory`` keeps them in memory.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import random
import statistics
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import psutil

from bench.table import Row, judge
from client_sdk import ComputeClient, ComputeError, JobCancelled, JobInfo, JobNotFound, JobState
from client_sdk import JobTimeout as SDKJobTimeout
from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk._proto.compute.v1 import compute_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Plan:
    """How long and how hard a soak runs."""

    seconds: float  # of load, warm-up included
    warmup: float  # before the RSS baseline
    max_jobs: int  # callers stop once the service accepted this many
    callers: int
    kill_every: float  # seconds between worker kills (randomized +-30%)
    settle: float  # seconds the jobs get to finish after the load stops
    wait: float  # longest a caller waits for one job (one unfinished by then is reported)


PLANS = {
    "full": Plan(180, 30, 40_000, 24, 15, settle=120, wait=120),
    "quick": Plan(16, 5, 4_000, 16, 6, settle=30, wait=30),
}
GROWTH_MIB = 50.0
#: The slowest 1% of trivial jobs on a local scheduler, while the cluster is
#: full and its workers die: they share nothing with the cluster's queue.
#: (On ``distributed`` a trivial job waits in Dask's queue, first in first
#: out, behind the sleeps that keep the cluster's two threads busy: that
#: tail is the queue's length, printed without a target.)
LOCAL_PING_P99 = 1.0
SCHEDULERS = ("distributed", "threads", "processes", "synchronous")
_DONE, _FAILED, _CANCELLED = JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED
#: Each kind of work: how often callers pick it, and the final states its jobs may
#: end in (another is reported, not judged). compute() calls have no id to check.
MIX: dict[str, tuple[int, set[JobState]]] = {
    "ping": (18, {_DONE}),
    "inc": (18, {_DONE}),
    "map": (5, {_DONE}),
    "sleep": (8, {_DONE}),
    "raises": (8, {_FAILED}),
    "array": (5, set()),
    "cancel": (9, {_CANCELLED, _DONE}),
    "time_limit": (5, {_FAILED}),
    "run_deadline": (5, {_CANCELLED}),
    "compute_deadline": (2, set()),
    "leave_submit": (3, {_DONE}),
    "leave_run": (4, {_CANCELLED, _DONE}),
}


class Ledger:
    """What the callers saw: accepted job ids, tagged Run calls, refusals and surprises."""

    def __init__(self, max_jobs: int) -> None:
        self.lock = threading.Lock()
        self.max_jobs = max_jobs
        self.jobs: dict[str, str] = {}  # job id -> kind
        self.tags: dict[str, str] = {}  # job name of a Run cut off before its answer -> kind
        self.runs = 0  # compute() calls (their ids are found in ListJobs)
        self.refused: collections.Counter[str] = collections.Counter()
        self.surprises: collections.Counter[str] = collections.Counter()
        #: Round trips of trivial named jobs: (scheduler, seconds, job id).
        self.pings: list[tuple[str, float, str]] = []

    def track(self, kind: str, *job_ids: str) -> None:
        with self.lock:
            self.jobs.update((job_id, kind) for job_id in job_ids)

    def tag(self, kind: str, name: str) -> None:
        with self.lock:
            self.tags[name] = kind

    def count(self, counter: collections.Counter[str], key: str) -> None:
        with self.lock:
            counter[key] += 1

    def accepted(self) -> int:
        """Jobs accepted so far, as far as the callers know."""
        return len(self.jobs) + len(self.tags) + self.runs

    def full(self) -> bool:
        return self.accepted() >= self.max_jobs


def _named(function: str, *args: Any, scheduler: str = "distributed", name: str = "") -> pb.JobSpec:
    spec = pb.JobSpec(
        scheduler=getattr(pb, f"SCHEDULER_{scheduler.upper()}"),
        name=name,
        request_id=uuid.uuid4().hex,
    )
    spec.call.function = function
    spec.call.args.extend(list(args))
    return spec


class Caller:
    """One caller: its own client and channel, picking work from the mix until told to stop."""

    def __init__(self, index: int, seed: int, target: str, ledger: Ledger, wait: float) -> None:
        self.rng = random.Random(f"{seed}:{index}")
        self.wait = wait
        self.target = target
        self.ledger = ledger
        self.client = ComputeClient(target, timeout=wait)
        self.channel = grpc.insecure_channel(target)
        self.stub = pb_grpc.ComputeServiceStub(self.channel)
        self.kinds, self.weights = list(MIX), [weight for weight, _ in MIX.values()]

    def loop(self, until: Callable[[], bool]) -> None:
        try:
            while not until() and not self.ledger.full():
                kind = self.rng.choices(self.kinds, self.weights)[0]
                try:
                    getattr(self, kind)()
                except ComputeError as exc:  # refused, or a wait that ran out
                    self.ledger.count(self.ledger.refused, f"{kind}: {type(exc).__name__}")
                except grpc.RpcError as err:
                    self.ledger.count(self.ledger.refused, f"{kind}: {err.code().name}")
                except Exception as exc:
                    self._expect(kind, False, f"raised {type(exc).__name__}")
        finally:
            self.client.close()
            self.channel.close()

    def _scheduler(self) -> str:
        return self.rng.choice(SCHEDULERS)

    def _expect(self, kind: str, ok: bool, what: str) -> None:
        if not ok:
            self.ledger.count(self.ledger.surprises, f"{kind}: {what}")

    def ping(self) -> None:
        scheduler = self._scheduler()
        start = time.perf_counter()
        job = self.client.submit_function("ping", scheduler=scheduler)
        self.ledger.track("ping", job.job_id)
        self._expect("ping", job.result(self.wait) == "pong", "wrong value")
        with self.ledger.lock:
            self.ledger.pings.append((scheduler, time.perf_counter() - start, job.job_id))

    def inc(self) -> None:
        from bench.tasks import inc

        n = self.rng.randrange(1000)
        job = self.client.submit(inc, n, scheduler=self._scheduler())
        self.ledger.track("inc", job.job_id)
        self._expect("inc", job.result(self.wait) == n + 1, "wrong value")

    def map(self) -> None:
        from bench.tasks import inc

        n = self.rng.randrange(2, 20)
        jobs = self.client.map(inc, range(n), scheduler=self.rng.choice(("distributed", "threads")))
        self.ledger.track("map", *(job.job_id for job in jobs))
        self._expect(
            "map", self.client.gather(jobs, self.wait) == list(range(1, n + 1)), "wrong values"
        )

    def sleep(self) -> None:
        job = self.client.submit_function("sleep", self.rng.uniform(0.05, 1.0))
        self.ledger.track("sleep", job.job_id)
        job.result(self.wait)

    def raises(self) -> None:
        from bench.tasks import inc

        if self.rng.random() < 0.5:  # a named function refusing its argument: ValueError
            job = self.client.submit_function("fib", 99, scheduler=self._scheduler())
            expected: type[Exception] = ValueError
        else:  # a pickled call raising on the worker: TypeError
            job = self.client.submit(inc, None, scheduler=self._scheduler())
            expected = TypeError
        self.ledger.track("raises", job.job_id)
        self._expect("raises", isinstance(job.exception(self.wait), expected), "other exception")

    def array(self) -> None:
        from bench.measure import array_reduction

        size = self.rng.choice((200, 400))
        (value,) = self.client.compute(array_reduction(size, 100), scheduler=self._scheduler())
        with self.ledger.lock:
            self.ledger.runs += 1
        self._expect("array", value > 0, "wrong value")

    def cancel(self) -> None:
        scheduler = self.rng.choice(("distributed", "distributed", "threads"))
        job = self.client.submit_function("sleep", self.rng.uniform(0.5, 3.0), scheduler=scheduler)
        self.ledger.track("cancel", job.job_id)
        time.sleep(self.rng.uniform(0.0, 0.8))
        if job.cancel("soak: the caller changed its mind"):
            try:
                job.result(self.wait)
            except JobCancelled:
                return
            self._expect("cancel", False, "cancelled job returned a value")
        else:
            job.result(self.wait)

    def time_limit(self) -> None:
        job = self.client.submit_function(
            "sleep", self.rng.uniform(2.0, 4.0), job_timeout=self.rng.uniform(0.2, 0.8)
        )
        self.ledger.track("time_limit", job.job_id)
        info = self.client.wait(job.job_id, self.wait)
        self._expect(
            "time_limit",
            info.error is not None and info.error.type == "TimeoutError",
            "no TimeoutError",
        )

    def run_deadline(self) -> None:
        name = f"soak-{uuid.uuid4().hex}"
        spec = _named("sleep", self.rng.uniform(1.5, 3.0), name=name)
        self.ledger.tag("run_deadline", name)
        try:
            self.stub.Run(pb.RunRequest(job=spec, release=True), timeout=self.rng.uniform(0.4, 1.0))
        except grpc.RpcError as err:
            self._expect(
                "run_deadline", err.code() is grpc.StatusCode.DEADLINE_EXCEEDED, err.code().name
            )
        else:
            self._expect("run_deadline", False, "finished before its deadline")

    def compute_deadline(self) -> None:
        from bench.measure import array_reduction

        with self.ledger.lock:
            self.ledger.runs += 1
        try:
            self.client.compute(array_reduction(1500, 250), timeout=self.rng.uniform(0.2, 0.6))
        except SDKJobTimeout:
            return
        self._expect("compute_deadline", False, "finished before its deadline")

    def leave_submit(self) -> None:
        # Submit, then close the client before the job ends: the job goes on.
        with ComputeClient(self.target, timeout=60) as client:
            job = client.submit_function("sleep", self.rng.uniform(0.3, 1.5))
            self.ledger.track("leave_submit", job.job_id)
            time.sleep(self.rng.uniform(0.0, 0.3))

    def leave_run(self) -> None:
        # Close the channel under a waiting Run: the server cancels the job.
        name = f"soak-{uuid.uuid4().hex}"
        channel = grpc.insecure_channel(self.target)
        try:
            grpc.channel_ready_future(channel).result(timeout=30)  # away mid-wait, not mid-connect
            spec = _named(
                "sleep",
                self.rng.uniform(1.5, 3.0),
                scheduler=self.rng.choice(("distributed", "threads")),
                name=name,
            )
            # Held until the channel closes: a call future that is collected cancels its call.
            call = pb_grpc.ComputeServiceStub(channel).Run.future(
                pb.RunRequest(job=spec), timeout=60
            )
            self.ledger.tag("leave_run", name)
            time.sleep(self.rng.uniform(0.3, 1.2))
        finally:
            channel.close()
        self._expect("leave_run", call.cancelled() or call.done(), "call still open")


def worker_pids(server_pid: int, client: ComputeClient) -> list[int]:
    """The Dask worker processes under the server: the children listening on a worker's port."""
    ports = {int(w.address.rsplit(":", 1)[1]) for w in client.info().workers}
    found = []
    for child in psutil.Process(server_pid).children(recursive=True):
        try:
            listening = {
                c.laddr.port for c in child.net_connections("tcp") if c.status == psutil.CONN_LISTEN
            }
        except psutil.Error:
            continue
        if listening & ports:
            found.append(child.pid)
    return found


def _all_jobs(client: ComputeClient) -> dict[str, JobInfo]:
    return {job.job_id: job for job in client.list_jobs(page_size=1000)}


@dataclasses.dataclass
class Accounting:
    """The service's word on every job, once settled."""

    accepted: dict[str, JobInfo]  # every job the service listed or answered with
    lost: list[str]  # ids the service gave out and no longer knows
    stuck: list[str]  # queued or running after the settle time
    unreasoned: list[str]  # failed or cancelled without a reason
    untagged: collections.Counter[str]  # Run calls cut off with no record under their name
    counted: int  # jobs the server's metrics count as accepted
    unexpected: collections.Counter[str]


def account(client: ComputeClient, ledger: Ledger, metrics_port: int, settle: float) -> Accounting:
    """Wait for the jobs to settle, then check each through the service.

    The server's own count of accepted jobs (its metrics) must match its
    listing: a record that vanished would show there even if no caller
    had its id.
    """
    deadline = time.monotonic() + settle
    for job in _all_jobs(client).values():
        if not job.state.finished:
            try:
                client.wait(job.job_id, max(0.1, deadline - time.monotonic()))
            except (SDKJobTimeout, ComputeError):
                pass
    with ledger.lock:  # a caller past its time may still be writing
        kinds, tags = dict(ledger.jobs), dict(ledger.tags)
    listed = _all_jobs(client)
    lost = []
    for job_id in kinds:
        if job_id not in listed:
            try:
                listed[job_id] = client.get_job(job_id)
            except JobNotFound:
                lost.append(job_id)
    by_name = {job.name: job for job in listed.values() if job.name}
    untagged: collections.Counter[str] = collections.Counter()
    for name, kind in tags.items():
        if name in by_name:
            kinds[by_name[name].job_id] = kind
        else:
            untagged[kind] += 1
    stuck = [j.job_id for j in listed.values() if not j.state.finished]
    unreasoned = [
        j.job_id
        for j in listed.values()
        if (j.state is JobState.FAILED and not (j.error and j.error.type and j.error.message))
        or (j.state is JobState.CANCELLED and not j.cancel_reason)
    ]
    unexpected: collections.Counter[str] = collections.Counter()
    for job_id, kind in kinds.items():
        job = listed.get(job_id)
        if job is not None and job.state.finished and job.state not in MIX[kind][1]:
            unexpected[f"{kind} {job.state.value} ({_reason(job)})"] += 1
    counted = int(_metric(metrics_port, "dask_compute_jobs_submitted_total"))
    return Accounting(
        accepted=listed,
        lost=lost,
        stuck=stuck,
        unreasoned=unreasoned,
        untagged=untagged,
        counted=counted,
        unexpected=unexpected,
    )


def _metric(port: int, name: str) -> float:
    """The sum of a Prometheus counter's samples on the server's metrics endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{")
    )


#: Short names of the cancel reasons the soak provokes, for the table.
_CANCELS = {
    "soak: the caller changed its mind": "by its caller",
    "the deadline of the Run call passed": "Run deadline",
    "the caller of Run went away": "Run caller left",
}


def _reason(job: JobInfo) -> str:
    if job.error is not None:
        return job.error.type.rsplit(".", 1)[-1]
    return _CANCELS.get(job.cancel_reason, job.cancel_reason[:30])


def _top(counter: collections.Counter[str], n: int = 4) -> str:
    return ", ".join(f"{key} {count}" for key, count in counter.most_common(n))


@dataclasses.dataclass
class Chaos:
    """The killer and the sampler: threads beside the callers until ``stop`` is set.

    Every second the sampler reads the server's RSS and times a
    ``ListFunctions`` call, which the server answers from memory: its time
    is how long the server's event loop kept callers waiting.
    """

    pid: int
    stop: threading.Event = dataclasses.field(default_factory=threading.Event)
    kills: list[int] = dataclasses.field(default_factory=list)
    rss: list[int] = dataclasses.field(default_factory=list)
    probes: list[float] = dataclasses.field(default_factory=list)

    def start(self, target: str, plan: Plan, rng: random.Random) -> list[threading.Thread]:
        threads = [
            threading.Thread(target=self._kill, args=(target, plan, rng), daemon=True),
            threading.Thread(target=self._sample, args=(target,), daemon=True),
        ]
        for thread in threads:
            thread.start()
        return threads

    def now(self) -> int:
        """The server's resident memory now, in bytes."""
        return psutil.Process(self.pid).memory_info().rss

    def _kill(self, target: str, plan: Plan, rng: random.Random) -> None:
        with ComputeClient(target, timeout=30) as client:
            while not self.stop.wait(plan.kill_every * rng.uniform(0.7, 1.3)):
                try:
                    pid = rng.choice(sorted(worker_pids(self.pid, client)))
                    psutil.Process(pid).kill()
                except (ComputeError, psutil.Error, IndexError) as exc:
                    logger.warning("soak: no worker killed this time: %r", exc)
                    continue
                self.kills.append(pid)

    def _sample(self, target: str) -> None:
        with ComputeClient(target, timeout=60) as client:
            while True:
                self.rss.append(self.now())
                start = time.perf_counter()
                try:
                    client.functions()
                except ComputeError as exc:
                    logger.warning("soak: ListFunctions failed: %r", exc)
                else:
                    self.probes.append(time.perf_counter() - start)
                if self.stop.wait(1.0):
                    return


def run(quick: bool, workers: int, threads: int) -> list[Row]:
    """Soak the service; return the table's rows (MISSED when a job is lost or stuck)."""
    from bench import processes

    plan = PLANS["quick" if quick else "full"]
    seed = int(os.environ.get("BENCH_SOAK_SEED") or random.SystemRandom().randrange(2**31))
    store = os.environ.get("BENCH_SOAK_STORE", "sqlite")
    print(
        f"soak: seed {seed} (BENCH_SOAK_SEED={seed} replays the mix), job records in {store}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="dask-compute-soak-") as scratch:
        metrics_port = processes.free_port()
        args = [
            *processes.cluster_args(workers, threads),
            "--job-store", "memory" if store == "memory" else f"sqlite:///{scratch}/jobs.db",
            "--local-processes", "2",
            # Results expire within the run; records stay (an hour) for the accounting.
            "--result-ttl", "30",
            # The server's count of accepted jobs, to hold its listing against.
            "--metrics-port", str(metrics_port),
        ]  # fmt: skip
        with processes.server(args) as service:
            return _soak(service, metrics_port, plan, seed, workers)


def _soak(service: Any, metrics_port: int, plan: Plan, seed: int, workers: int) -> list[Row]:
    ledger = Ledger(plan.max_jobs)
    chaos = Chaos(service.pid)
    with ComputeClient(service.target, timeout=60) as client:
        client.run("ping")
        callers = [Caller(i, seed, service.target, ledger, plan.wait) for i in range(plan.callers)]
        start = time.monotonic()
        end = start + plan.seconds
        loads = [
            threading.Thread(target=c.loop, args=(lambda: time.monotonic() >= end,), daemon=True)
            for c in callers
        ]
        for thread in loads:
            thread.start()
        helpers = chaos.start(service.target, plan, random.Random(seed))
        time.sleep(plan.warmup)
        baseline, accepted_then = chaos.now(), ledger.accepted()
        for thread in loads:
            thread.join(max(1.0, end + plan.wait + 30 - time.monotonic()))
        loaded = time.monotonic() - start
        chaos.stop.set()
        for thread in helpers:
            thread.join(30)
        result = account(client, ledger, metrics_port, plan.settle)
        back = 0
        for _ in range(300):  # the nannies restart every killed worker
            back = client.info().n_workers
            if back >= workers:
                break
            time.sleep(0.2)
        time.sleep(2.0)  # let the last answers' garbage go
        final = chaos.now()
    growth = Growth(
        baseline, final, max(chaos.rss, default=final), ledger.accepted() - accepted_then
    )
    return _rows(plan, seed, loaded, ledger, result, chaos, (back, workers), growth)


@dataclasses.dataclass(frozen=True)
class Growth:
    """The server's RSS after the warm-up, at the end and at its peak, in bytes."""

    baseline: int
    final: int
    peak: int
    jobs: int  # accepted since the baseline

    def row(self) -> Row:
        mib = 2**20
        grew = (self.final - self.baseline) / mib
        per_job = (self.final - self.baseline) / max(self.jobs, 1) / 1024
        return Row(
            "server RSS after warm-up -> end",
            f"{self.baseline / mib:.1f} -> {self.final / mib:.1f} MiB (peak {self.peak / mib:.1f})",
            "",
            f"{grew:+.1f} MiB ({grew * mib / self.baseline:+.1%}; {per_job:+.2f} KiB/job)",
            f"growth < {GROWTH_MIB:g} MiB",
            judge(grew, GROWTH_MIB),
        )


def _rows(
    plan: Plan,
    seed: int,
    loaded: float,
    ledger: Ledger,
    result: Accounting,
    chaos: Chaos,
    workers: tuple[int, int],
    growth: Growth,
) -> list[Row]:
    from bench.measure import Latency
    from bench.table import latency

    jobs = result.accepted.values()
    states = collections.Counter(j.state for j in jobs)
    failed = collections.Counter(_reason(j) for j in jobs if j.state is JobState.FAILED)
    cancelled = collections.Counter(_reason(j) for j in jobs if j.state is JobState.CANCELLED)
    unlisted = max(0, result.counted - len(result.accepted))
    missing = len(result.lost) + unlisted + len(result.stuck)
    if missing or result.unreasoned:
        stuck = [result.accepted[job_id] for job_id in result.stuck[:20]]
        logger.error(
            "soak: lost %s; stuck %s; without a reason %s",
            result.lost[:20],
            [
                f"{j.job_id} {j.state.value} {j.scheduler} {j.target} started={j.started}"
                for j in stuck
            ],
            result.unreasoned[:20],
        )
    surprises = result.unexpected + ledger.surprises
    refused = sum(ledger.refused.values())
    untagged = sum(result.untagged.values())
    back, wanted = workers
    kills = len(chaos.kills)
    pings = Latency(tuple(seconds for _, seconds, _ in ledger.pings))
    probes = Latency(tuple(chaos.probes))
    return [
        Row(
            f"{plan.callers} callers, {loaded:.0f} s of mixed load (seed {seed})",
            f"{len(result.accepted):,} jobs accepted, {len(result.accepted) / loaded:,.1f} jobs/s",
        ),
        Row("  succeeded", f"{states[JobState.SUCCEEDED]:,}"),
        Row("  failed, with a reason", f"{states[JobState.FAILED]:,}: {_top(failed)}"),
        Row("  cancelled, with a reason", f"{states[JobState.CANCELLED]:,}: {_top(cancelled)}"),
        _verdict(
            "  lost, or queued/running after settling",
            f"{len(result.lost) + unlisted} lost, {len(result.stuck)} stuck "
            f"(server counted {result.counted:,} accepted, lists {len(result.accepted):,})",
            "0",
            missing == 0,
        ),
        _verdict(
            "  failed or cancelled without a reason",
            f"{len(result.unreasoned)}",
            "0",
            not result.unreasoned,
        ),
        Row(
            "  ended otherwise than its kind expects",
            f"{sum(surprises.values())}" + (f": {_top(surprises, 3)}" if surprises else ""),
        ),
        Row(
            "  calls refused, timed out, or cut off before a job",
            f"{refused + untagged}"
            + (f": {_top(ledger.refused, 3)}" if refused else "")
            + (
                f"; Run cut off before it was accepted: {_top(result.untagged)}" if untagged else ""
            ),
        ),
        Row(
            f"  trivial job round trip ({len(pings.samples):,} pings)",
            f"{latency(pings)}  max {max(pings.samples, default=0):.2f} s",
        ),
        *_ping_rows(ledger.pings, result.accepted),
        Row(
            f"  ListFunctions, once a second ({len(probes.samples)} calls)",
            f"{latency(probes)}  max {max(probes.samples, default=0):.2f} s",
        ),
        _verdict(
            "Dask worker processes killed (SIGKILL)",
            f"{kills}; {back}/{wanted} workers back after",
            ">= 1, all back",
            kills >= 1 and back >= wanted,
        ),
        growth.row(),
    ]


def _ping_rows(pings: list[tuple[str, float, str]], jobs: dict[str, JobInfo]) -> list[Row]:
    """The round trip by scheduler, and where the slowest 1% spent their time."""
    from bench.measure import Latency
    from bench.table import latency, ms

    rows = []
    for scheduler in SCHEDULERS:
        times = Latency(tuple(seconds for name, seconds, _ in pings if name == scheduler))
        if not times.samples:
            continue
        label = f"    on {scheduler} ({len(times.samples):,})"
        value = f"{latency(times)}  max {max(times.samples):.2f} s"
        if scheduler == "distributed":  # behind the sleeps queued on the cluster's threads
            rows.append(Row(label, value + "  (in Dask's queue)"))
        else:
            met = times.p99 <= LOCAL_PING_P99
            rows.append(_verdict(label, value, f"p99 <= {LOCAL_PING_P99:g} s", met))
    slowest = sorted(pings, key=lambda ping: ping[1])[-max(1, len(pings) // 100) :]
    queued, ran, after = [], [], []
    for _, seconds, job_id in slowest:
        info = jobs.get(job_id)
        if info is None or None in (info.submitted, info.started, info.finished):
            continue
        assert info.submitted and info.started and info.finished
        queued.append((info.started - info.submitted).total_seconds())
        ran.append((info.finished - info.started).total_seconds())
        after.append(seconds - (info.finished - info.submitted).total_seconds())
    if queued:
        by = collections.Counter(name for name, _, _ in slowest)
        rows.append(
            Row(
                f"    slowest 1% ({_top(by)})",
                f"queued {ms(statistics.median(queued))}, ran {ms(statistics.median(ran))}, "
                f"after {ms(statistics.median(after))} (medians)",
            )
        )
    return rows


def _verdict(label: str, value: str, target: str, met: bool) -> Row:
    return Row(label, value, "", "", target, "ok" if met else "MISSED")
