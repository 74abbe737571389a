"""``python -m bench [--quick] [--section NAME ...]``: the service against direct Dask, one table.

Each section measures the service and its direct-Dask (or bare-gRPC)
counterpart side by side, moments apart, in the same run:

- ``core``: round trips, batches, 64 concurrent callers and array reductions
  (:mod:`bench.core`);
- ``data``: large results and uploads against a bare gRPC stream
  (:mod:`bench.data`);
- ``chain``: a chain of jobs passing a large array, against direct Dask futures
  and a download and upload per step (:mod:`bench.chain`);
- ``scale``: one service replica against two on the same external cluster
  (:mod:`bench.scale`);
- ``soak``: mixed load with cancellations, deadlines and worker kills, every
  job accounted for (:mod:`bench.soak`);
- ``tracing``: the ping path with traces off, and on (OTLP to a local
  collector), with and without a caller's span (:mod:`bench.tracing`).

Figures are medians of many calls, but other work on the machine moves them:
compare the two sides of a row, measured moments apart, rather than runs.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import platform
import sys
import time

from bench.table import Row, render

logger = logging.getLogger(__name__)

#: Every section, in the order a full run measures them.
SECTIONS = ("core", "data", "chain", "scale", "soak", "tracing")


def _available() -> tuple[str, ...]:
    """The sections whose module exists (so a partial checkout still runs)."""
    found = []
    for name in SECTIONS:
        try:
            importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"bench.{name}":
                raise
            continue
        found.append(name)
    return tuple(found)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen sections and print one table."""
    available = _available()
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="a short run (what the test suite runs)"
    )
    parser.add_argument(
        "--section",
        action="append",
        choices=available,
        help="measure only this section (repeatable; default: all of them)",
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="Dask workers on each side (default 2)"
    )
    parser.add_argument("--threads", type=int, default=1, help="threads per worker (default 1)")
    args = parser.parse_args(argv)
    import dask
    import distributed  # noqa: F401  (its import sets its own log levels; ours come after)

    logging.basicConfig(level=logging.WARNING)
    for name in ("distributed", "dask"):
        logging.getLogger(name).setLevel(logging.ERROR)

    mode = "quick" if args.quick else "full"
    sections = args.section or list(available)
    start, load = time.perf_counter(), os.getloadavg()[0]
    rows: list[Row] = []
    for name in sections:
        module = importlib.import_module(f"bench.{name}")
        rows.append(Row(f"[{name}]", ""))
        rows.extend(module.run(args.quick, args.workers, args.threads))
    print(
        f"Dask Compute Service benchmark ({mode}): {args.workers} worker processes x "
        f"{args.threads} thread on each side; {os.cpu_count()} CPUs; python "
        f"{platform.python_version()}, dask {dask.__version__}"
    )
    print(render(rows))
    print(
        f"took {time.perf_counter() - start:.1f}s; load average {load:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end (other work on the machine moves every figure)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
