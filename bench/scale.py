"""The scale section: one service replica against two on the same external cluster.

In one run it starts a real ``dask scheduler`` and ``workers`` ``dask worker``
processes, two ``dask-compute serve --scheduler-address`` replicas that share
their job records in a private PostgreSQL server (the deployed configuration;
without PostgreSQL each replica keeps its own records in memory, which is
enough here because every caller talks to one replica only), and an
in-process ``distributed.Client`` for reference. Then 64 concurrent callers
(``AsyncComputeClient`` tasks) make trivial jobs, ``run("ping")`` and
``submit(inc, 1).result()``:

- all 64 callers on one replica;
- 32 callers on each of the two replicas;
- for reference, 64 threads on the direct ``distributed.Client``.

The two configurations alternate (the order swaps each round) so that drift
in the machine's other load falls on both. Each row gives jobs per second,
p50, p99 and errors, then the CPU each process group used per job meanwhile.
The ratio of jobs per second, two replicas over one, says whether the
front-end is the bottleneck: above 1.3x it was; about 1.0x it is not, and the
last row names what is instead (the Dask scheduler when it keeps its one core
busy, else the machine's CPUs, with the front-end's share of them), and the
spread of the per-round ratios when they disagree.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import pathlib
import re
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

from bench.measure import Latency
from bench.table import Row, concurrency

logger = logging.getLogger(__name__)

#: (calls per caller, rounds of both configurations, warm-up calls per replica and job)
SIZES = {"full": (10, 4, 10), "quick": (2, 1, 3)}
CALLERS = 64
#: Above this ratio of jobs per second, two replicas over one, the front-end was the bottleneck.
FRONT_END_BOUND = 1.3
#: CPU use (in cores) below which the started processes count as idle.
IDLE = 0.3
#: Process groups whose CPU is reported, in the order they are printed.
GROUPS = ("scheduler", "workers", "replicas", "PostgreSQL", "callers")

_SCHEDULER = re.compile(r"Scheduler at:\s+(tcp://\S+)")
_WORKER = re.compile(r"Registered to:")


# -- CPU accounting -------------------------------------------------------------


class CpuMeter:
    """CPU seconds used by groups of processes (each with its live descendants)."""

    def __init__(self) -> None:
        self.pids: dict[str, list[int]] = {group: [] for group in GROUPS}
        # This process (its threads, not the processes it starts) runs every caller.
        self.own = os.getpid()
        self.pids["callers"].append(self.own)

    def add(self, group: str, pid: int) -> None:
        """Count ``pid`` (and whatever processes it starts) in ``group``."""
        self.pids[group].append(pid)

    def sample(self) -> CpuSample:
        """CPU seconds so far of each group, and of the whole machine."""
        import psutil

        seconds: dict[str, float] = {}
        for group, pids in self.pids.items():
            total = 0.0
            for pid in pids:
                try:
                    root = psutil.Process(pid)
                    family = [root]
                    if pid != self.own:
                        family.extend(root.children(recursive=True))
                except psutil.Error:
                    continue
                for proc in family:
                    with contextlib.suppress(psutil.Error):
                        times = proc.cpu_times()
                        total += times.user + times.system
            seconds[group] = total
        machine = psutil.cpu_times()
        busy = ("user", "nice", "system", "irq", "softirq")  # guest time is within user
        seconds["machine"] = sum(getattr(machine, field, 0.0) for field in busy)
        # Timed with the machine's figure: reading the processes' takes a while.
        return CpuSample(seconds, time.perf_counter())


@dataclasses.dataclass(frozen=True)
class CpuSample:
    """CPU seconds so far, by group, and when they were read."""

    seconds: dict[str, float]
    clock: float


@dataclasses.dataclass
class Tally:
    """One configuration's calls and CPU over every round."""

    samples: list[float] = dataclasses.field(default_factory=list)
    errors: int = 0
    elapsed: float = 0.0
    cpu: dict[str, float] = dataclasses.field(default_factory=dict)
    wall: float = 0.0  # between the CPU samples (a little more than elapsed)
    rates: list[float] = dataclasses.field(default_factory=list)  # jobs/s of each round

    def add(self, lat: Latency, before: CpuSample, after: CpuSample) -> None:
        """Add a measured run, and the CPU samples taken before and after it."""
        self.samples.extend(lat.samples)
        self.errors += lat.errors
        self.elapsed += lat.elapsed
        self.rates.append(lat.rate)
        self.wall += after.clock - before.clock
        for group, now in after.seconds.items():
            used = max(now - before.seconds.get(group, now), 0.0)
            self.cpu[group] = self.cpu.get(group, 0.0) + used

    @property
    def latency(self) -> Latency:
        """Every round's calls as one run."""
        return Latency(tuple(self.samples), self.errors, self.elapsed)

    def busy(self, group: str) -> float:
        """The group's CPU use, in percent of one core."""
        return 100 * self.cpu.get(group, 0.0) / self.wall if self.wall else float("nan")

    def per_job(self, group: str) -> float:
        """The group's CPU seconds per job."""
        return self.cpu.get(group, 0.0) / len(self.samples) if self.samples else float("nan")

    def front_end_share(self) -> float:
        """The part of this run's CPU (ours) that the replicas and their store used."""
        ours = sum(self.cpu.get(group, 0.0) for group in GROUPS)
        front = self.cpu.get("replicas", 0.0) + self.cpu.get("PostgreSQL", 0.0)
        return front / ours if ours else float("nan")

    def describe(self, groups: Sequence[str]) -> str:
        """The CPU row's text: each group's CPU per job, and how busy the machine was."""
        parts = ", ".join(f"{group} {1000 * self.per_job(group):.1f}" for group in groups)
        cores = os.cpu_count() or 1
        return f"{parts} ms; machine {self.busy('machine'):.0f}% of {100 * cores}% busy"


# -- the jobs ------------------------------------------------------------------


async def _ping(client: Any) -> None:
    if await client.run("ping") != "pong":
        raise AssertionError("ping did not return pong")


async def _inc(client: Any) -> None:
    from bench.tasks import inc

    job = await client.submit(inc, 1)
    if await job.result() != 2:
        raise AssertionError("inc(1) did not return 2")


JOBS: dict[str, Callable[[Any], Awaitable[None]]] = {
    'run("ping")': _ping,
    "submit(inc, 1).result()": _inc,
}


# -- processes -----------------------------------------------------------------


def _dask() -> str:
    here = pathlib.Path(sys.executable).with_name("dask")
    return str(here) if here.exists() else "dask"


@contextlib.contextmanager
def _database(meter: CpuMeter) -> Iterator[tuple[str, str]]:
    """The job store replicas use; yields ``(--job-store value, its description)``."""
    from bench import pg

    if not pg.available():
        logger.warning("PostgreSQL is not installed: each replica keeps its records in memory")
        yield "memory", "memory, one per replica (no PostgreSQL here)"
        return
    with pg.postgres() as database:
        meter.add("PostgreSQL", database.pid)
        yield database.url, "PostgreSQL, shared by the replicas"


@contextlib.contextmanager
def _cluster(workers: int, threads: int, meter: CpuMeter) -> Iterator[str]:
    """A ``dask scheduler`` and its ``dask worker`` processes; yields the scheduler's address."""
    from bench import processes

    with contextlib.ExitStack() as stack:
        scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix="dask-compute-bench-"))
        command = [_dask(), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard"]
        scheduler = stack.enter_context(processes.process(command, _SCHEDULER, timeout=120))
        meter.add("scheduler", scheduler.pid)
        address = scheduler.match.group(1)
        for index in range(workers):
            command = [
                _dask(), "worker", address, "--nthreads", str(threads), "--name", f"w{index}",
                "--no-dashboard", "--local-directory", str(pathlib.Path(scratch) / f"w{index}"),
            ]  # fmt: skip
            worker = stack.enter_context(processes.process(command, _WORKER, timeout=120))
            meter.add("workers", worker.pid)
        yield address


def _replica_args(address: str, store: str) -> list[str]:
    return [
        "--scheduler-address", address, "--job-store", store,
        # Jobs here all run on the cluster: keep the local pools small.
        "--local-processes", "1", "--local-threads", "2",
    ]  # fmt: skip


# -- measuring -----------------------------------------------------------------


async def _spread(
    clients: Sequence[Any], job: Callable[[Any], Awaitable[None]], per_caller: int
) -> Latency:
    """``CALLERS`` callers split evenly over ``clients``, all at once, as one run."""
    from bench import measure

    share = CALLERS // len(clients)
    parts = await asyncio.gather(
        *(measure.concurrent(lambda c=c: job(c), share, per_caller) for c in clients)
    )
    samples = tuple(s for part in parts for s in part.samples)
    return Latency(samples, sum(p.errors for p in parts), max(p.elapsed for p in parts))


async def _metered(
    meter: CpuMeter, run: Awaitable[Latency]
) -> tuple[Latency, CpuSample, CpuSample]:
    """Await ``run``; also return the CPU samples taken before and after it."""
    before = meter.sample()
    lat = await run
    return lat, before, meter.sample()


async def _settle(meter: CpuMeter, timeout: float = 30) -> None:
    """Wait (a while at most) until the started processes are about idle.

    A replica's start-up goes on after it listens: its ``processes`` pool
    starts and imports in the background. That is start-up, not serving.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = meter.sample()
        await asyncio.sleep(0.5)
        after = meter.sample()
        used = sum(after.seconds[g] - before.seconds[g] for g in GROUPS if g != "callers")
        if used < IDLE * (after.clock - before.clock):
            return
    logger.warning("the cluster and replicas are still busy; measuring anyway")


async def _ready(client: Any, workers: int, warmup: int) -> None:
    """Wait until the replica sees every worker, then warm it up with untimed jobs."""
    deadline = time.monotonic() + 60
    while (await client.info()).n_workers < workers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{client.target} never saw {workers} workers")
        await asyncio.sleep(0.2)
    for job in JOBS.values():
        await asyncio.gather(*(job(client) for _ in range(warmup)))


async def _measure(
    targets: Sequence[str],
    direct_call: Callable[[], Any],
    workers: int,
    sizes: tuple[int, int, int],
    meter: CpuMeter,
) -> dict[tuple[str, int], Tally]:
    """Every configuration, rounds alternating; keyed by (job, replicas), replicas 0 = direct."""
    from bench import measure
    from client_sdk import AsyncComputeClient

    per_caller, rounds, warmup = sizes
    tallies: dict[tuple[str, int], Tally] = {}
    async with contextlib.AsyncExitStack() as stack:
        clients = []
        for target in targets:
            client = AsyncComputeClient(target, timeout=120)
            stack.push_async_callback(client.close)
            clients.append(client)
        await asyncio.gather(*(_ready(client, workers, warmup) for client in clients))
        for _ in range(warmup):
            await asyncio.to_thread(direct_call)
        await _settle(meter)
        for round_ in range(rounds):
            threaded = asyncio.to_thread(measure.threaded, direct_call, CALLERS, per_caller)
            tallies.setdefault(("direct", 0), Tally()).add(*await _metered(meter, threaded))
            order = (1, 2) if round_ % 2 == 0 else (2, 1)
            for name, job in JOBS.items():
                for replicas in order:
                    spread = _spread(clients[:replicas], job, per_caller)
                    tallies.setdefault((name, replicas), Tally()).add(
                        *await _metered(meter, spread)
                    )
    return tallies


def _verdict(ratio: float) -> str:
    if ratio >= FRONT_END_BOUND:
        return f">={FRONT_END_BOUND}x"
    if ratio >= 1.1:
        return f"1.1x to {FRONT_END_BOUND}x"
    return "~1.0x" if ratio > 0.9 else "<0.9x"


def _meaning(one: Tally, two: Tally) -> str:
    """What the ratio of jobs per second, two replicas over one, says."""
    cores = os.cpu_count() or 1
    ratio = two.latency.rate / one.latency.rate
    lead = _verdict(ratio)
    rounds = [b / a for a, b in zip(one.rates, two.rates, strict=True)]
    if len(rounds) > 1:
        lead += f" (rounds {min(rounds):.2f}x to {max(rounds):.2f}x"
        if len({_verdict(r) for r in rounds}) > 1:
            lead += ", too noisy to be sure"
        lead += ")"
    gain = f"a second replica adds {100 * (ratio - 1):.0f}% jobs/s"
    if ratio >= FRONT_END_BOUND:
        return f"{lead}: the front-end was the bottleneck; {gain}"
    if ratio >= 1.1:
        return f"{lead}: the front-end was part of the bottleneck; {gain}"
    if ratio <= 0.9:
        lead += "; a second replica costs more than it adds"
    if two.busy("callers") >= 85:
        callers = two.busy("callers")
        return f"{lead}, but the callers' own process was {callers:.0f}% busy: it may be the limit"
    if two.busy("scheduler") >= 80:
        scheduler = two.busy("scheduler")
        return f"{lead}: not the front-end but the Dask scheduler ({scheduler:.0f}% of its core)"
    if two.busy("machine") >= 85 * cores:
        return (
            f"{lead}: the {cores} CPUs are the limit ({two.busy('machine'):.0f}% busy, "
            f"other work included), not one process; the front-end (replicas + store) "
            f"takes {100 * two.front_end_share():.0f}% of our CPU per job"
        )
    return f"{lead}: not the front-end, nor CPU: Dask's round trip (batching, messages)"


def run(quick: bool, workers: int, threads: int) -> list[Row]:
    """Start the cluster, the store and both replicas, measure, and return the table's rows."""
    from distributed import Client

    from bench import processes
    from bench.tasks import inc

    sizes = SIZES["quick" if quick else "full"]
    per_caller = sizes[0]
    meter = CpuMeter()
    with contextlib.ExitStack() as stack:
        store, store_label = stack.enter_context(_database(meter))
        address = stack.enter_context(_cluster(workers, threads, meter))
        targets = []
        for _ in range(2):
            replica = stack.enter_context(processes.server(_replica_args(address, store)))
            meter.add("replicas", replica.pid)
            targets.append(replica.target)
        direct = stack.enter_context(Client(address, timeout=60))
        tallies = asyncio.run(
            _measure(
                targets,
                lambda: direct.submit(inc, 1, pure=False).result(),
                workers,
                sizes,
                meter,
            )
        )

    store_short = "PostgreSQL" if store != "memory" else "memory"
    rows = [
        Row(
            f"external cluster: dask scheduler + {workers} dask workers x {threads} thread",
            f"job store: {store_label}",
        ),
    ]
    direct_tally = tallies[("direct", 0)]
    rows.append(
        Row(
            f"{CALLERS} callers x {per_caller} calls, direct Dask submit(inc).result() (threads)",
            "",
            concurrency(direct_tally.latency),
        )
    )
    groups = [group for group in GROUPS if meter.pids[group]]
    rows.append(Row("    CPU per job", direct_tally.describe(groups)))
    for name in JOBS:
        one, two = tallies[(name, 1)], tallies[(name, 2)]
        ratio = two.latency.rate / one.latency.rate
        rows.append(Row(f"{name}, {CALLERS} AsyncComputeClient callers x {per_caller} calls", ""))
        half = CALLERS // 2
        for tally, label, shown in (
            (
                one,
                f"  1 replica ({store_short}), {CALLERS} callers",
                f"{one.latency.rate / direct_tally.latency.rate:.2f}x direct",
            ),
            (
                two,
                f"  2 replicas ({store_short}), {half} + {half} callers",
                f"{ratio:.2f}x 1 replica",
            ),
        ):
            lat = tally.latency
            rows.append(
                Row(
                    label,
                    concurrency(lat),
                    "",
                    shown,
                    "0 errors",
                    "ok" if lat.errors == 0 else f"MISSED ({lat.errors} errors)",
                )
            )
            rows.append(Row("    CPU per job", tally.describe(groups)))
        rows.append(Row(f"  what {ratio:.2f}x says", _meaning(one, two)))
    return rows
