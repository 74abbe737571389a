"""Named functions the test server loads with ``--functions tests.functions``."""

from __future__ import annotations

from server.registry import function


@function
def scale(values: list[float], factor: float = 2.0) -> list[float]:
    """Multiply each value by ``factor``."""
    return [v * factor for v in values]


@function
def greet(name: str, *, punctuation: str = "!") -> str:
    """Greet ``name``."""
    return f"hello {name}{punctuation}"


@function
def fail(message: str) -> None:
    """Raise a ValueError with ``message``."""
    raise ValueError(message)


@function
def not_json() -> object:
    """Return a set, which has no JSON form."""
    return {1, 2, 3}


@function(lazy=True)
def frame(rows: int = 6, aggregate: bool = True):
    """A Dask DataFrame of ``rows`` rows, summed by group unless ``aggregate`` is false."""
    import dask.dataframe as dd
    import pandas as pd

    pdf = pd.DataFrame(
        {"group": [f"g{i % 3}" for i in range(rows)], "value": [float(i) for i in range(rows)]}
    )
    df = dd.from_pandas(pdf, npartitions=2)
    if not aggregate:
        return df
    return df.groupby("group").value.sum().reset_index().sort_values("group")


@function
def array_sum(data) -> float:
    """Sum all the numbers of ``data`` (an uploaded array, referenced as {"$object": id})."""
    import numpy as np

    return float(np.asarray(data).sum())


@function(lazy=True)
def slow_graph(parts: int = 6, delay: float = 0.3):
    """A ``dask.delayed`` sum of ``parts`` tasks of ``delay`` seconds each: progress to watch."""
    import dask

    from tests.helpers import slowinc

    return dask.delayed(sum)([dask.delayed(slowinc)(i, delay=delay) for i in range(parts)])
