"""Which client and server versions can exchange pickled work.

Pickled work carries code and objects from one interpreter to another, so the
two sides must agree on what the bytes mean:

============  ==========================================  =====================
Package       Must match                                  Why
============  ==========================================  =====================
Python        major.minor (3.11.x with 3.11.y)            cloudpickle sends
                                                          functions by value as
                                                          bytecode, which
                                                          changes every minor
                                                          release
cloudpickle   major (3.x with 3.y)                        its wire format may
                                                          change with a major
dask          exactly, unless ``check_versions=False``    graphs, task specs
                                                          and expressions are
                                                          internal classes that
                                                          change between
                                                          releases
distributed   exactly, unless ``check_versions=False``    as dask, and the two
                                                          are released together
============  ==========================================  =====================

Python and cloudpickle differences are always refused: the work could not even
be loaded. dask and distributed differences are refused by default and can be
allowed with ``ComputeClient(..., check_versions=False)`` for plain callables
that do not touch Dask's internals. A package missing on this side is not
checked: no pickled work can hold its objects.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import platform

from client_sdk.errors import VersionMismatch
from client_sdk.types import Versions

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def local_versions() -> Versions:
    """The versions of this process's Python and packages."""
    return Versions(
        python=platform.python_version(),
        dask=_installed("dask"),
        distributed=_installed("distributed"),
        cloudpickle=_installed("cloudpickle"),
    )


def _installed(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return ""


def _release(version: str, parts: int) -> tuple[str, ...]:
    return tuple(version.split(".")[:parts])


def incompatibilities(local: Versions, server: Versions, strict: bool = True) -> list[str]:
    """Why ``local`` and ``server`` cannot exchange pickled work ([] when they can).

    Args:
        local: This side's versions.
        server: The server's versions.
        strict: Also require equal dask and distributed versions.
    """
    rules = [("Python", "python", 2), ("cloudpickle", "cloudpickle", 1)]
    if strict:
        rules += [("dask", "dask", 0), ("distributed", "distributed", 0)]
    problems = []
    for label, field, parts in rules:
        mine, theirs = getattr(local, field), getattr(server, field)
        if not mine:
            continue
        same = _release(mine, parts) == _release(theirs, parts) if parts else mine == theirs
        if not same:
            problems.append(f"{label} {mine} here, {theirs or 'unknown'} on the server")
    return problems


def check(local: Versions, server: Versions, strict: bool = True) -> None:
    """Refuse to send pickled work across an incompatible pair.

    Args:
        local: This side's versions.
        server: The server's versions.
        strict: Also require equal dask and distributed versions.

    Raises:
        VersionMismatch: Naming each incompatible package with both versions.
    """
    problems = incompatibilities(local, server, strict)
    if not problems:
        return
    hint = ""
    if strict and not incompatibilities(local, server, strict=False):
        hint = (
            "; if your work does not depend on Dask's internals, "
            "pass check_versions=False to allow differing dask/distributed versions"
        )
    raise VersionMismatch(
        "cannot send pickled work to this server: " + "; ".join(problems) + hint,
        local=local,
        server=server,
    )
