"""Connect to a running server, print the client, and call it the ways a Dask user would.

``print(client)`` reads like Dask's ``Client``; ``client.run`` calls a named
function that the server offers; ``client.submit`` sends any Python function
(cloudpickled) and returns a future-like ``Job``; ``client.map`` submits many.

Run it with ``python examples/02_hello_client.py --target 127.0.0.1:50051``
(or set ``DASK_COMPUTE_TARGET``).
"""

from __future__ import annotations

import argparse

from client_sdk import ComputeClient


def square(x: int) -> int:
    """Defined here, in __main__, so it travels to the cluster by value."""
    return x * x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", help="the server's host:port (default: $DASK_COMPUTE_TARGET)")
    args = parser.parse_args()

    with ComputeClient(args.target) as client:
        print(client)
        info = client.info()
        print(f"dashboard: {info.dashboard_link or '(off)'}")
        print(f"server versions: python {info.versions.python}, dask {info.versions.dask}")
        print("named functions:", ", ".join(f.name for f in client.functions()))

        print("run('add', 2, 3) =", client.run("add", 2, 3))
        job = client.submit(square, 7)
        print(f"submit(square, 7) -> {job!r} -> {job.result()}")
        jobs = client.map(square, range(10))
        print("map(square, range(10)) ->", client.gather(jobs))


if __name__ == "__main__":
    main()
