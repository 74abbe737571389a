"""Submit a long job, watch its state change, then cancel it.

``client.submit_function`` (or ``client.submit``) returns at once with a
``Job``; ``job.state()`` asks the server where the job is; ``job.cancel()``
stops it, queued or running; ``job.result()`` then raises ``JobCancelled``.

As in Dask, cancelling releases the job's tasks, but a task already running
in a worker thread cannot be interrupted: the Python call it is in finishes
in the background, and its result is dropped.

Run it with ``python examples/05_submit_watch_cancel.py --target 127.0.0.1:50051``.
"""

from __future__ import annotations

import argparse
import time

from client_sdk import ComputeClient, JobCancelled, JobState


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", help="the server's host:port (default: $DASK_COMPUTE_TARGET)")
    parser.add_argument(
        "--seconds", type=float, default=60, help="how long the job sleeps (default 60)"
    )
    parser.add_argument("--scheduler", help="the scheduler to run on (default: the server's)")
    args = parser.parse_args()

    with ComputeClient(args.target) as client:
        print(client)
        job = client.submit_function("sleep", args.seconds, scheduler=args.scheduler)
        # The callback runs on the client's callback thread: it records what it
        # saw, and the main thread prints it, so lines don't interleave.
        seen = []
        job.add_done_callback(lambda j: seen.append(j.cancelled()))
        print(f"submitted {job.job_id}")
        start = time.monotonic()
        while job.state() is not JobState.RUNNING and time.monotonic() - start < 30:
            print(f"  {time.monotonic() - start:5.2f}s  {job.state().value}")
            time.sleep(0.05)
        for _ in range(3):
            print(f"  {time.monotonic() - start:5.2f}s  {job.state().value}")
            time.sleep(0.2)
        print("cancel() ->", job.cancel())
        try:
            job.result()
        except JobCancelled as exc:
            print(f"result() raised JobCancelled: {exc}")
        info = job.info()
        print(f"final state: {info.state.value} (reason: {info.cancel_reason})")
        time.sleep(0.2)  # the callback runs on the client's callback thread
        print(f"callback: job is done, cancelled={seen[0] if seen else None}")


if __name__ == "__main__":
    main()
