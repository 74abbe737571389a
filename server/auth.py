"""Who is calling, and what they may do.

The core asks :func:`current_caller` for the identity of the call it serves;
the transport layer sets it with :func:`caller_scope`. With no credentials
configured every call is :data:`ANONYMOUS`, which may do everything.

Permissions:
    ``run``: call named functions, read own jobs and results, read cluster info.
    ``code``: also submit pickled callables and Dask graphs.
    ``admin``: see and cancel every caller's jobs.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Iterator

PERMISSIONS = ("run", "code", "admin")


@dataclasses.dataclass(frozen=True)
class Caller:
    """An authenticated caller.

    Attributes:
        name: Who it is (a token's name, or a client certificate's subject).
        permissions: A subset of :data:`PERMISSIONS`.
    """

    name: str
    permissions: frozenset[str]

    def can(self, permission: str) -> bool:
        """Whether the caller holds ``permission`` (``admin`` implies all)."""
        return permission in self.permissions or "admin" in self.permissions

    @property
    def is_admin(self) -> bool:
        """Whether the caller sees every caller's jobs."""
        return "admin" in self.permissions


#: The caller when no credentials are configured.
ANONYMOUS = Caller("anonymous", frozenset(PERMISSIONS))

_current: contextvars.ContextVar[Caller] = contextvars.ContextVar("dask_compute_caller", default=ANONYMOUS)


def current_caller() -> Caller:
    """The caller of the call being served."""
    return _current.get()


@contextlib.contextmanager
def caller_scope(caller: Caller) -> Iterator[Caller]:
    """Make ``caller`` the current caller inside the block."""
    token = _current.set(caller)
    try:
        yield caller
    finally:
        _current.reset(token)
