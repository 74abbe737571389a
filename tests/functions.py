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
