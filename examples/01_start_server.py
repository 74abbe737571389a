"""Start a server twice, with worker processes and with worker threads, and print the client.

Like ``LocalCluster(processes=True)`` versus ``LocalCluster(processes=False)``
in a Dask course: with ``--processes`` each worker is its own process (no
shared GIL, data is serialized between them); with ``--no-processes`` the
workers are threads inside the server's process.

This example starts its own servers (``dask-compute serve --port 0``), reads
the port each one logs, connects, prints the client, and stops the server.

Run it with ``python examples/01_start_server.py``.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from client_sdk import ComputeClient

LISTENING = re.compile(r"serving compute\.v1\.ComputeService on (\S+):(\d+)")


def dask_compute() -> str:
    """The ``dask-compute`` command next to this Python, else the one on PATH."""
    here = pathlib.Path(sys.executable).with_name("dask-compute")
    return str(here) if here.exists() else shutil.which("dask-compute") or "dask-compute"


def start_server(worker_flag: str, log: pathlib.Path) -> tuple[subprocess.Popen, str]:
    """Start ``dask-compute serve --port 0`` and return it with the address it logged."""
    command = [
        dask_compute(),
        "serve",
        "--port",
        "0",
        worker_flag,
        "--n-workers",
        "2",
        "--threads-per-worker",
        "1",
        "--dashboard-address",
        "",
        "--job-store",
        "memory",  # not the default file another server may hold
    ]
    print("$", " ".join(command))
    with open(log, "wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        match = LISTENING.search(log.read_text(errors="replace"))
        if match:
            return process, f"{match.group(1)}:{match.group(2)}"
        if process.poll() is not None:
            raise SystemExit(f"the server exited:\n{log.read_text()}")
        time.sleep(0.1)
    process.kill()
    raise SystemExit("the server did not start within 120s")


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for flag in ("--processes", "--no-processes"):
            process, target = start_server(flag, pathlib.Path(tmp) / f"server{flag}.log")
            try:
                with ComputeClient(target) as client:
                    print(client)
                    info = client.info()
                    print(f"  workers are {info.worker_type}: {[w.name for w in info.workers]}")
                    print(f"  2 + 3 = {client.run('add', 2, 3)}")
                    worker_pid = client.submit(os.getpid).result()
                    where = "the server's own" if worker_pid == process.pid else "its own"
                    print(
                        f"  a task ran in process {worker_pid}: {where} "
                        f"(server {process.pid}, this script {os.getpid()})"
                    )
            finally:
                process.send_signal(signal.SIGTERM)
                print(f"  server stopped with exit code {process.wait(60)}")


if __name__ == "__main__":
    main()
