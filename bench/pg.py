"""A private PostgreSQL server for the benchmark's replicas to share job records in.

Replicas of the service share their job records in PostgreSQL, so the
benchmark measures them that way when the machine has PostgreSQL's server
binaries (Debian's, under ``/usr/lib/postgresql/*/bin``, or on ``PATH``). The
server lives in a fresh temporary folder, listens on a free loopback port,
trusts local connections, and is stopped and deleted when the block ends.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import logging
import os
import pathlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator

from bench.processes import free_port

logger = logging.getLogger(__name__)

_TOOLS = ("initdb", "pg_ctl")


@dataclasses.dataclass(frozen=True)
class Database:
    """A running PostgreSQL server."""

    url: str  #: its SQLAlchemy URL, for ``--job-store``
    pid: int  #: the postmaster's process id (its backends are its children)


def _binary(name: str) -> str | None:
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return candidates[0] if candidates else shutil.which(name)


def available() -> bool:
    """Whether this machine can run a PostgreSQL server (and the driver is installed)."""
    if any(_binary(tool) is None for tool in _TOOLS):
        return False
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return False
    if os.geteuid() == 0:  # initdb refuses root: run it as the postgres user
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            return False
        return shutil.which("runuser") is not None
    return True


@contextlib.contextmanager
def postgres() -> Iterator[Database]:
    """Start a PostgreSQL server for the block; yields its URL and process id.

    Raises:
        RuntimeError: PostgreSQL is missing, or would not start (with its output).
    """
    if not available():
        raise RuntimeError("PostgreSQL's server binaries (or psycopg) are not installed")
    base = pathlib.Path(tempfile.mkdtemp(prefix="dask-compute-bench-pg-"))
    data = base / "data"
    prefix: list[str] = []
    if os.geteuid() == 0:
        import pwd

        user = pwd.getpwnam("postgres")
        os.chmod(base, 0o755)
        os.chown(base, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    pg_ctl = [*prefix, str(_binary("pg_ctl")), "-D", str(data)]
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
    try:
        initdb = [*prefix, str(_binary("initdb")), "-D", str(data), "-U", "dask"]
        _check([*initdb, "--auth=trust", "-E", "UTF8"])
        _check(
            [*pg_ctl, "-l", str(base / "postgres.log"), "-w", "-t", "60", "start", "-o", options]
        )
        try:
            pid = int((data / "postmaster.pid").read_text().split()[0])
            yield Database(f"postgresql+psycopg://dask@127.0.0.1:{port}/postgres", pid)
        finally:
            subprocess.run(
                [*pg_ctl, "-m", "immediate", "-w", "stop"], check=False, capture_output=True
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _check(command: list[str]) -> None:
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        output = (done.stdout + done.stderr)[-3000:]
        raise RuntimeError(f"{' '.join(command)} failed:\n{output}")
