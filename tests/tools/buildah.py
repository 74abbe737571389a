"""Building and running the project's image with buildah, without Docker or a registry.

No registry is reachable here, so the base image is a Debian rootfs made by
``mmdebstrap`` and imported into buildah; the real ``Dockerfile`` is built on
it with ``--build-arg BASE_IMAGE=...``, and the container runs with chroot
isolation on the host's network, so the host reaches its ports on loopback.

Everything lives in a buildah storage of its own under ``CACHE``, so the
base image and the build's dependency layers are reused by the next run:
the base for ``BASE_MAX_AGE`` (then it is rebuilt, picking up Debian's
updates), the layers for as long as ``pyproject.toml`` is unchanged. A fresh
machine builds all of it. After each build the layers that it did not use are
removed, so the storage holds one build's worth. The storage driver is
overlay where the kernel mounts overlayfs (a layered build is then about five
times faster), else vfs, which works anywhere but copies every layer whole;
DASK_COMPUTE_BUILDAH_DRIVER=vfs|overlay chooses.

A running container is put in a memory cgroup of its own, bind-mounted where
the container looks for its cgroup (as container runtimes do), so the
service inside sees a container memory limit as it would under Kubernetes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import pathlib
import re
import shlex
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from typing import Any

from tests.tools.binaries import find_tool

#: Where the storage and the lock live; override with DASK_COMPUTE_CONTAINER_CACHE.
CACHE = pathlib.Path(
    os.environ.get("DASK_COMPUTE_CONTAINER_CACHE", "/var/tmp/dask-compute-service-containers")
)
SUITE = "bookworm"
INCLUDE = ("python3", "python3-venv", "ca-certificates")
BASE_NAME = "localhost/dask-compute-test-base"
BASE_MAX_AGE = 14 * 24 * 3600
IMAGE = "localhost/dask-compute:test"
CONTAINER_PREFIX = "dask-compute-test-"
#: The host's CA bundle, mounted into the build for pip (TLS-intercepting proxies).
HOST_CA_BUNDLE = os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt"


class BuildahError(AssertionError):
    """A buildah or mmdebstrap command failed; the message has its output."""


def _run(cmd: Sequence[str], *, timeout: float, log: pathlib.Path | None = None) -> str:
    """Run ``cmd``; return its output, or raise :class:`BuildahError` with it."""
    proc = subprocess.run(
        list(cmd),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )
    if log is not None:
        with log.open("a") as f:
            f.write(f"$ {shlex.join(cmd)}\n{proc.stdout}\n")
    if proc.returncode != 0:
        raise BuildahError(f"{shlex.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-6000:]}")
    return proc.stdout


def overlay_works() -> bool:
    """Whether this kernel lets us mount overlayfs (on ``CACHE``'s file system)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE, prefix="overlay-probe-") as tmp:
        dirs = {name: pathlib.Path(tmp) / name for name in ("lower", "upper", "work", "merged")}
        for d in dirs.values():
            d.mkdir()
        options = f"lowerdir={dirs['lower']},upperdir={dirs['upper']},workdir={dirs['work']}"
        proc = subprocess.run(
            ["mount", "-t", "overlay", "overlay", "-o", options, str(dirs["merged"])],
            capture_output=True,
            timeout=30,
            check=False,
        )
        if proc.returncode != 0:
            return False
        subprocess.run(["umount", str(dirs["merged"])], capture_output=True, timeout=30, check=True)
        return True


class Buildah:
    """buildah with this suite's own storage.

    Args:
        root: The directory of the storages (one per driver).
        driver: ``overlay`` or ``vfs``; by default DASK_COMPUTE_BUILDAH_DRIVER,
            else overlay where it works, else vfs.
    """

    def __init__(self, root: pathlib.Path = CACHE, driver: str | None = None) -> None:
        driver = (
            driver
            or os.environ.get("DASK_COMPUTE_BUILDAH_DRIVER")
            or ("overlay" if overlay_works() else "vfs")
        )
        self.driver = driver
        # Its state (locks, mounts) on a tmpfs, cleared at boot; one per storage.
        tag = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:8]
        runroot = pathlib.Path(f"/run/dask-compute-service-buildah/{tag}-{driver}")
        if not os.access("/run", os.W_OK):
            runroot = root / f"run-{driver}"
        self.prefix = [
            find_tool("buildah"),
            "--root",
            str(root / f"storage-{driver}"),
            "--runroot",
            str(runroot),
            # On the command line: buildah ignores STORAGE_DRIVER here.
            "--storage-driver",
            driver,
        ]

    def __call__(self, *args: str, timeout: float = 300, log: pathlib.Path | None = None) -> str:
        return _run([*self.prefix, *args], timeout=timeout, log=log)

    def images(self) -> list[dict[str, Any]]:
        """``buildah images --all``: every image, intermediate layers included."""
        return json.loads(self("images", "--all", "--json") or "null") or []

    def image_config(self, ref: str) -> dict[str, Any]:
        """The image's Docker-format config (Entrypoint, Cmd, User, Healthcheck, ...)."""
        return json.loads(self("inspect", "--type", "image", ref))["Docker"]["config"]


@contextlib.contextmanager
def _locked(path: pathlib.Path) -> Iterator[None]:
    """One build at a time in the shared storage (another test run may be building)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def base_image(buildah: Buildah, log: pathlib.Path) -> str:
    """A Debian image with python3 and its venv module, made by mmdebstrap.

    Reused while younger than ``BASE_MAX_AGE``; its tag is a hash of how it
    is made, so a change of suite or packages makes a new one.

    Returns:
        The image's reference, for ``--build-arg BASE_IMAGE``.
    """
    recipe = json.dumps({"suite": SUITE, "variant": "minbase", "include": INCLUDE})
    ref = f"{BASE_NAME}:{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"
    for image in buildah.images():
        if ref in (image.get("names") or []) and time.time() - image["created"] < BASE_MAX_AGE:
            return ref
    mmdebstrap = find_tool("mmdebstrap")
    with tempfile.TemporaryDirectory(dir=CACHE, prefix="rootfs-") as tmp:
        tarball = pathlib.Path(tmp) / "rootfs.tar"
        _run(
            [
                mmdebstrap,
                "--variant=minbase",
                f"--include={','.join(INCLUDE)}",
                SUITE,
                str(tarball),
            ],
            timeout=900,
            log=log,
        )
        container = buildah("from", "scratch", log=log).strip()
        try:
            buildah("add", container, str(tarball), "/", timeout=600, log=log)
            buildah("config", "--cmd", '["/bin/bash"]', container, log=log)
            buildah("commit", "--rm", container, ref, timeout=600, log=log)
        except BuildahError:
            with contextlib.suppress(BuildahError):
                buildah("rm", container)
            raise
    return ref


def _stale(name: str) -> bool:
    """Whether ``name`` is one of ours from a test run that is gone."""
    match = re.fullmatch(rf"{CONTAINER_PREFIX}(\d+)\D*", name)
    return bool(match) and not pathlib.Path(f"/proc/{match.group(1)}").exists()


def _remove_stale_containers(buildah: Buildah) -> None:
    """What a killed earlier run left behind: running servers, cgroups, containers."""
    for mountpoint in (pathlib.Path("/sys/fs/cgroup/memory"), pathlib.Path("/sys/fs/cgroup")):
        for path in mountpoint.glob(f"{CONTAINER_PREFIX}*"):
            if path.is_dir() and _stale(path.name):
                MemoryCgroup.destroy_path(path)
    for container in json.loads(buildah("containers", "--json") or "null") or []:
        if _stale(container.get("containername", "")):
            with contextlib.suppress(BuildahError):
                buildah("rm", container["containername"])


def _prune(buildah: Buildah, build_output: str) -> None:
    """Remove untagged images (old layers) that this build did not use."""
    used = set(
        re.findall(r"^--> (?:Using cache )?([0-9a-f]{11,64})\s*$", build_output, re.MULTILINE)
    )
    used_prefixes = {u[:11] for u in used}
    for image in buildah.images():
        if image.get("names") or image["id"][:11] in used_prefixes:
            continue
        with contextlib.suppress(BuildahError):  # in use by a container of another run
            buildah("rmi", image["id"])


def build_image(root: pathlib.Path, log: pathlib.Path) -> tuple[Buildah, str]:
    """Build ``root/Dockerfile`` into ``IMAGE`` on the local Debian base.

    Returns:
        The buildah wrapper and the image's reference.

    Raises:
        BuildahError: mmdebstrap or the build failed (the output says where).
    """
    CACHE.mkdir(parents=True, exist_ok=True)
    buildah = Buildah()
    with _locked(CACHE / "lock"):
        _remove_stale_containers(buildah)
        base = base_image(buildah, log)
        args = [
            "bud",
            "--isolation",
            "chroot",
            "--network",
            "host",
            # The docker format keeps HEALTHCHECK (OCI has no such field).
            "--format",
            "docker",
            "--layers",
            "--build-arg",
            f"BASE_IMAGE={base}",
        ]
        if pathlib.Path(HOST_CA_BUNDLE).is_file():
            args += [
                "-v",
                f"{HOST_CA_BUNDLE}:/run/host-ca.crt:ro",
                "--build-arg",
                "PIP_CERT=/run/host-ca.crt",
            ]
        args += ["-f", str(root / "Dockerfile"), "-t", IMAGE, str(root)]
        output = buildah(*args, timeout=1500, log=log)
        _prune(buildah, output)
    return buildah, IMAGE


class MemoryCgroup:
    """A memory cgroup with a limit, which a container sees as its own.

    Container runtimes bind-mount the container's cgroup directory where the
    cgroup filesystem is mounted, so ``/sys/fs/cgroup/memory.max`` (v2) or
    ``/sys/fs/cgroup/memory/memory.limit_in_bytes`` (v1) inside is the
    container's limit: :meth:`wrap` does the same in a private mount
    namespace before running the command.

    Args:
        name: The cgroup's directory name.
        limit: The memory limit in bytes.
    """

    def __init__(self, name: str, limit: int) -> None:
        v1 = pathlib.Path("/sys/fs/cgroup/memory")
        v2 = pathlib.Path("/sys/fs/cgroup")
        if (v1 / "memory.limit_in_bytes").exists():
            self.mountpoint, self.limit_file = v1, "memory.limit_in_bytes"
        elif (v2 / "cgroup.controllers").exists():
            self.mountpoint, self.limit_file = v2, "memory.max"
            controllers = (v2 / "cgroup.subtree_control").read_text().split()
            if "memory" not in controllers:
                (v2 / "cgroup.subtree_control").write_text("+memory")
        else:
            raise BuildahError("no cgroup memory controller at /sys/fs/cgroup")
        self.path = self.mountpoint / name
        self.path.mkdir(exist_ok=True)
        (self.path / self.limit_file).write_text(str(limit))
        self.limit = limit

    def wrap(self, cmd: Sequence[str]) -> list[str]:
        """``cmd`` run inside this cgroup, seeing it at the cgroup mount point."""
        script = (
            f"echo $$ > {shlex.quote(str(self.path / 'cgroup.procs'))} && "
            f"mount --bind {shlex.quote(str(self.path))} {shlex.quote(str(self.mountpoint))} && "
            'exec "$@"'
        )
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *cmd]

    def pids(self) -> list[int]:
        """The processes in the cgroup."""
        try:
            return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
        except FileNotFoundError:
            return []

    def destroy(self, timeout: float = 30) -> None:
        """Kill whatever is left in the cgroup, then remove it."""
        self.destroy_path(self.path, timeout)

    @staticmethod
    def destroy_path(path: pathlib.Path, timeout: float = 30) -> None:
        """Kill the processes of the cgroup at ``path``, then remove it."""

        def pids() -> list[int]:
            try:
                return [int(p) for p in (path / "cgroup.procs").read_text().split()]
            except FileNotFoundError:
                return []

        deadline = time.monotonic() + timeout
        while pids() and time.monotonic() < deadline:
            for pid in pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
        with contextlib.suppress(FileNotFoundError, OSError):
            path.rmdir()


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_info(pid: int) -> dict[str, Any] | None:
    """A process's argv, uids and root directory from /proc (None once it is gone)."""
    try:
        argv = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        status = pathlib.Path(f"/proc/{pid}/status").read_text()
        root = os.readlink(f"/proc/{pid}/root")
    except (FileNotFoundError, ProcessLookupError):
        return None
    uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    return {
        "pid": pid,
        "argv": [a.decode(errors="replace") for a in argv if a],
        "uids": [int(u) for u in uids],
        "root": root,
    }


class Container:
    """A working container of ``image``, run like ``docker run IMAGE ARGS``.

    Args:
        buildah: The buildah wrapper.
        image: The image to run.
        log: Where the container's output goes.
    """

    def __init__(self, buildah: Buildah, image: str, log: pathlib.Path, suffix: str = "") -> None:
        self.buildah = buildah
        self.image = image
        self.log = log
        self.name = f"{CONTAINER_PREFIX}{os.getpid()}{suffix}"
        with contextlib.suppress(BuildahError):
            buildah("rm", self.name)
        buildah("from", "--name", self.name, image)
        self.config = buildah.image_config(image)
        self.process: subprocess.Popen | None = None
        self.cgroup: MemoryCgroup | None = None

    def set_env(self, **env: str) -> None:
        """Add environment variables to the container (``docker run -e``)."""
        for name, value in env.items():
            self.buildah("config", "--env", f"{name}={value}", self.name)

    def exec(self, *cmd: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run ``cmd`` in the container, which must not be running anything else.

        (buildah 1.28 with the overlay driver panics at the end of a run that
        shared its container with another run: use a second container of the
        same image to run commands beside a running one.)
        """
        assert self.process is None or self.process.poll() is not None, "the container is running"
        return subprocess.run(
            [
                *self.buildah.prefix,
                "run",
                "--isolation",
                "chroot",
                "--network",
                "host",
                self.name,
                "--",
                *cmd,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self, args: Sequence[str], memory_limit: int) -> None:
        """Start the image's entry point with ``args`` (in place of its CMD).

        Args:
            args: What ``docker run IMAGE ARGS`` would pass.
            memory_limit: The container's memory limit, in bytes.
        """
        entrypoint = self.config.get("Entrypoint") or []
        self.cgroup = MemoryCgroup(self.name, memory_limit)
        cmd = [
            *self.buildah.prefix,
            "run",
            "--isolation",
            "chroot",
            "--network",
            "host",
            self.name,
            "--",
            *entrypoint,
            *args,
        ]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.cgroup.wrap(cmd),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        """What the container printed so far."""
        return self.log.read_text(errors="replace")

    def processes(self) -> list[dict[str, Any]]:
        """The container's processes (those chrooted into its root filesystem)."""
        infos = [process_info(pid) for pid in (self.cgroup.pids() if self.cgroup else [])]
        return [i for i in infos if i is not None and i["root"] != "/"]

    def init_process(self) -> dict[str, Any] | None:
        """The entry point's first process (tini), as the host sees it."""
        first = (self.config.get("Entrypoint") or [""])[0]
        for info in self.processes():
            if info["argv"] and os.path.basename(info["argv"][0]) == first:
                return info
        return None

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM the entry point (as ``docker stop`` does) and wait for the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            init = self.init_process()
            if init is not None:
                os.kill(init["pid"], signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        if self.process.poll() is None:
            self.destroy()
        return self.process.returncode

    def destroy(self) -> None:
        """Kill everything that is left and remove the container; safe to repeat."""
        if self.cgroup is not None:
            self.cgroup.destroy()
        if self.process is not None:
            if self.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)
        with contextlib.suppress(BuildahError):
            self.buildah("rm", self.name)
