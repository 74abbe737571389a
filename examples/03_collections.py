"""One dask.array, one dask.bag and one dask.delayed pipeline, on each of the service's schedulers.

The same collection computes on any scheduler: the service's long-lived
``distributed`` cluster, or its ``threads``, ``processes`` and ``synchronous``
local schedulers, each picked per call with
``client.compute(x, scheduler=...)``. ``with client.as_default():`` makes a
plain ``x.compute()`` run on the service, as creating a ``distributed.Client``
does; ``x.compute(scheduler="threads")`` still means this machine's threads.

Run it with ``python examples/03_collections.py --target 127.0.0.1:50051``.
"""

from __future__ import annotations

import argparse
import time

import dask
import dask.array as da
import dask.bag as db

from client_sdk import SCHEDULERS, ComputeClient


def pipelines() -> dict:
    """The three collections, built lazily here and computed remotely."""
    x = da.random.default_rng(42).random((2_000, 2_000), chunks=(500, 500))
    array = (x + x.T).mean(axis=0).std()

    words = ["the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "the", "end"]
    bag = db.from_sequence(words * 200, npartitions=8).frequencies(sort=True).topk(3, key=1)

    @dask.delayed
    def load(i: int) -> list[int]:
        return list(range(i * 100, (i + 1) * 100))

    @dask.delayed
    def clean(values: list[int]) -> list[int]:
        return [v for v in values if v % 3]

    delayed = dask.delayed(sum)([dask.delayed(len)(clean(load(i))) for i in range(20)])
    return {"dask.array": array, "dask.bag": bag, "dask.delayed": delayed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", help="the server's host:port (default: $DASK_COMPUTE_TARGET)")
    args = parser.parse_args()

    with ComputeClient(args.target) as client:
        print(client)
        print(f"{'pipeline':<14}{'scheduler':<13}{'seconds':>8}  result")
        for name, collection in pipelines().items():
            for scheduler in SCHEDULERS:
                start = time.perf_counter()
                (value,) = client.compute(collection, scheduler=scheduler)
                elapsed = time.perf_counter() - start
                print(f"{name:<14}{scheduler:<13}{elapsed:>8.3f}  {value}")

        collection = pipelines()["dask.delayed"]
        with client.as_default():
            print("with client.as_default(): x.compute() =", collection.compute())
            print("  and dask.compute(x) =", dask.compute(collection))
        print("outside the block, x.compute() runs locally again:", collection.compute())


if __name__ == "__main__":
    main()
