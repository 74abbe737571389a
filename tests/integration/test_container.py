"""The real image, built from the real Dockerfile and run as a container.

buildah builds ``Dockerfile`` on a local Debian base made by mmdebstrap (no
registry is reachable; ``BASE_IMAGE`` is the build argument made for this),
then runs it with chroot isolation on the host's network, in a memory cgroup
of its own as a container runtime would, with the image's own entry point
(``tini -- dask-compute``) and ``serve`` flags for a small cluster. From the
host, the project's CLI checks the gRPC health service and the SDK runs
``pi``; the image's HEALTHCHECK command runs inside; the processes run as uid
10001; the LocalCluster's worker memory follows the container's limit; and
SIGTERM to tini drains the server to a clean exit.

The first run on a machine builds everything (the base image, then the
dependencies from PyPI); later runs reuse the base image and the dependency
layer (``tests/tools/buildah.py`` says how and where).
"""

from __future__ import annotations

import secrets
import subprocess
import time

import pytest

from tests.helpers import wait_until
from tests.tools.binaries import find_tool
from tests.tools.buildah import BuildahError, Container, build_image, free_port
from tests.tools.k8s import ROOT

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    # The first build on a fresh machine dominates; it runs in the first test's setup.
    pytest.mark.timeout(1800),
]

IMAGE_UID = 10001
MEMORY_LIMIT = 3 * 2**30  # the container's, as a runtime would set it
STARTUP_TIMEOUT = 180
#: The container listens on 0.0.0.0, where the server insists on tokens.
TOKEN = secrets.token_urlsafe(24)
CALLER = "container-test"


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory):
    """The image, built from the working tree's Dockerfile."""
    log = tmp_path_factory.mktemp("buildah") / "build.log"
    started = time.monotonic()
    try:
        buildah, ref = build_image(ROOT, log)
    except BuildahError as exc:
        pytest.fail(f"building the image failed (full log: {log}):\n{exc}")
    print(f"image built in {time.monotonic() - started:.0f}s ({buildah.driver} storage)")
    return buildah, ref


def _health(target: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [find_tool("dask-compute"), "health", "--target", target, "--timeout", "3"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.fixture(scope="module")
def probe(image, container, tmp_path_factory: pytest.TempPathFactory):
    """A second container of the image, to run commands beside the server's.

    It shares the host's network, so it reaches the server as the server's
    own container would; the server's container runs nothing but the server.
    """
    buildah, ref = image
    ctr = Container(buildah, ref, tmp_path_factory.mktemp("probe") / "probe.log", suffix="-probe")
    try:
        ctr.set_env(DASK_COMPUTE_TARGET=container.target)
        yield ctr
    finally:
        ctr.destroy()


@pytest.fixture(scope="module")
def container(image, tmp_path_factory: pytest.TempPathFactory):
    """The image running ``serve`` on a free port, SERVING; removed afterwards."""
    buildah, ref = image
    log = tmp_path_factory.mktemp("container") / "container.log"
    ctr = Container(buildah, ref, log)
    try:
        port = free_port()
        ctr.port = port
        ctr.target = f"127.0.0.1:{port}"
        # As a Kubernetes Secret would give them (k8s/base/deployment.yaml).
        ctr.set_env(DASK_COMPUTE_TOKENS=f"{CALLER} run {TOKEN}")
        ctr.start(
            [
                "serve",
                "--port",
                str(port),
                "--n-workers",
                "1",
                "--threads-per-worker",
                "1",
                "--dashboard-address",
                "",
                "--local-processes",
                "1",
            ],
            memory_limit=MEMORY_LIMIT,
        )

        def serving() -> bool:
            if ctr.process.poll() is not None:
                pytest.fail(
                    f"the container exited with {ctr.process.returncode}:\n{ctr.output()[-5000:]}"
                )
            return _health(ctr.target).returncode == 0

        wait_until(
            serving,
            timeout=STARTUP_TIMEOUT,
            interval=1,
            message=lambda: f"SERVING:\n{ctr.output()[-5000:]}",
        )
        yield ctr
    finally:
        ctr.destroy()


def test_image_metadata(image):
    buildah, ref = image
    config = buildah.image_config(ref)
    assert config["Entrypoint"] == ["tini", "--", "dask-compute"]
    assert config["Cmd"] == ["serve"]
    assert config["User"] == f"{IMAGE_UID}:{IMAGE_UID}"
    assert set(config["ExposedPorts"]) == {"50051/tcp", "8787/tcp", "9090/tcp"}
    assert "DASK_COMPUTE_HOST=0.0.0.0" in config["Env"]
    assert config["Healthcheck"]["Test"] == ["CMD", "dask-compute", "health", "--timeout", "3"]


def test_health_is_serving_from_the_host(container):
    proc = _health(container.target)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "SERVING"


def test_run_pi_from_the_host(container):
    from client_sdk import ComputeClient

    with ComputeClient(container.target, token=TOKEN, timeout=60) as client:
        value = client.run("pi", samples=100_000)
    assert abs(value - 3.14159) < 0.05, value


def test_calls_without_a_token_are_refused(container):
    from client_sdk import ComputeClient
    from client_sdk.errors import PermissionDenied

    with ComputeClient(container.target, timeout=60) as client, pytest.raises(PermissionDenied):
        client.run("pi", samples=1000)


def test_image_healthcheck_passes(container, probe, image):
    """The HEALTHCHECK command, run in the image against the server."""
    buildah, ref = image
    test = buildah.image_config(ref)["Healthcheck"]["Test"]
    assert test[0] == "CMD"
    proc = probe.exec(*test[1:])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "SERVING"


def test_runs_as_non_root(container):
    processes = container.processes()
    names = [" ".join(p["argv"][:4]) for p in processes]
    assert any("tini" in n for n in names) and any("dask-compute serve" in n for n in names), names
    for p in processes:
        assert p["uids"] == [IMAGE_UID] * 4, f"{p['argv']} runs as {p['uids']}"


def test_no_compilers_and_a_read_only_venv(probe):
    proc = probe.exec(
        "sh", "-c", "for c in gcc cc c++ g++ clang make; do command -v $c; done; exit 0"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"compilers in the image: {proc.stdout}"
    proc = probe.exec("sh", "-c", "touch /opt/venv/lib/x")
    assert proc.returncode != 0, "the service's user can change the installed code"


def test_worker_memory_follows_the_container_limit(container):
    from dask.system import CPU_COUNT

    from client_sdk import ComputeClient

    with ComputeClient(container.target, token=TOKEN, timeout=60) as client:
        info = client.info()
    (worker,) = info.workers
    # memory_limit="auto": the cgroup's limit, split by the worker's share of
    # the CPUs (the container has no CPU quota here, so all of the host's).
    expected = int(MEMORY_LIMIT * min(1, worker.nthreads / CPU_COUNT))
    assert worker.memory_limit == expected, (worker.memory_limit, expected)


def test_sigterm_drains_to_a_clean_exit(container):
    """Last: ``docker stop`` sends SIGTERM to PID 1, tini passes it on."""
    from client_sdk import ComputeClient

    with ComputeClient(container.target, token=TOKEN, timeout=60) as client:
        client.run("pi", samples=1000)
    code = container.stop(timeout=60)
    output = container.output()
    assert code == 0, output[-5000:]
    assert "shutting down" in output and "stopped" in output, output[-3000:]
    assert _health(container.target).returncode != 0
    # The job records stay in the image's state directory, written by the
    # service's user: a volume mounted there keeps them for the next start.
    proc = container.exec(
        "sh", "-c", "test -s /var/lib/dask-compute/jobs.db && ls -ln /var/lib/dask-compute"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f" {IMAGE_UID} {IMAGE_UID} " in proc.stdout, proc.stdout
    # The jobs, recorded under their caller's name (in the SQLite file or
    # its write-ahead log).
    proc = container.exec("sh", "-c", f"cat /var/lib/dask-compute/jobs.db* | grep -c {CALLER}")
    assert proc.returncode == 0, "the jobs run here are not in the job store"
