"""Pure-Python CPU-bound work on the ``threads`` and ``processes`` schedulers: the GIL at work.

``fib`` below never releases the GIL, so calls on the service's ``threads``
scheduler take turns on one core however many threads run them, while the
``processes`` scheduler runs them side by side, one per process. (NumPy and
pandas release the GIL, which is why ``threads`` is Dask's default for arrays.)
The speed-up you see depends on how many cores the server has free.

Run it with ``python examples/04_gil_fib.py --target 127.0.0.1:50051``.
"""

from __future__ import annotations

import argparse
import time

from client_sdk import ComputeClient


def fib(n: int) -> int:
    """The n-th Fibonacci number, the slow way: pure Python, all in the GIL."""
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", help="the server's host:port (default: $DASK_COMPUTE_TARGET)")
    parser.add_argument("--n", type=int, default=30, help="which Fibonacci number (default 30)")
    parser.add_argument("--calls", type=int, default=8, help="how many calls at once (default 8)")
    args = parser.parse_args()

    with ComputeClient(args.target) as client:
        print(client)
        timings = {}
        for scheduler in ("threads", "processes"):
            client.gather(client.map(fib, [10] * args.calls, scheduler=scheduler))  # warm up
            start = time.perf_counter()
            values = client.gather(client.map(fib, [args.n] * args.calls, scheduler=scheduler))
            timings[scheduler] = time.perf_counter() - start
            print(
                f"{args.calls} x fib({args.n}) = {values[0]} on {scheduler:<9}: "
                f"{timings[scheduler]:.2f}s"
            )
        print(f"processes were {timings['threads'] / timings['processes']:.1f}x as fast as threads")
        print(
            "the named function works the same way: run('fib', 20) =",
            client.run("fib", 20, scheduler="processes"),
        )


if __name__ == "__main__":
    main()
