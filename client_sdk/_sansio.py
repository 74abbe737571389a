"""The sans-I/O protocol between operations and the clients that drive them.

An operation (:mod:`client_sdk._ops`) is a generator that yields the
:class:`Call` (or :class:`Stream`) it needs made and is sent the response, or
has the call's exception thrown into it, until it returns its value. A client drives it with
:func:`advance`; :func:`blocking` and :func:`coroutine` turn an operation into
a method of the blocking or the asynchronous client, keeping its signature and
docstring, and :func:`pages` / :func:`async_pages` do the same for listings.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Iterator
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, Protocol, TypeAlias, TypeVar, cast

if TYPE_CHECKING:
    from client_sdk._ops.paging import JobPages
    from client_sdk.types import JobInfo

logger = logging.getLogger(__name__)

T = TypeVar("T")
R_co = TypeVar("R_co", covariant=True)
P = ParamSpec("P")

#: An operation: yields calls, receives their responses, returns a ``T``.
Op: TypeAlias = Generator["Step", Any, T]


@dataclasses.dataclass(frozen=True)
class Call:
    """One unary call an operation needs made.

    Attributes:
        method: The ComputeService method, for example "GetJob".
        request: Its request message.
        timeout: The call's deadline in seconds; ``None`` is the client's default.
    """

    method: str
    request: Any
    timeout: float | None = None


@dataclasses.dataclass(frozen=True)
class Stream:
    """One server-streaming call an operation needs made.

    The driver hands each response message to ``sink`` as it arrives (``sink``
    never raises) and then sends the operation ``None``, or throws it the
    call's error, after which the operation may ask again from where the
    messages stopped.

    Attributes:
        method: The ComputeService method, for example "GetJobResult".
        request: Its request message.
        sink: Takes each response message.
        timeout: The call's deadline in seconds; ``None`` is the client's default.
    """

    method: str
    request: Any
    sink: Callable[[Any], None]
    timeout: float | None = None


#: What an operation may yield.
Step = Call | Stream


class Method(Protocol[P, R_co]):
    """The type of a method :func:`blocking`, :func:`coroutine` or :func:`pages`
    makes: on an instance, it takes the operation's arguments (``P``, less
    ``self``) and returns ``R_co``, so users' type checkers see what the client's
    method takes and returns. A client's method replaces the operation of the
    same name, with another return type: each such line says so with
    ``# type: ignore[assignment]``.
    """

    def __get__(self, obj: Any, owner: type | None = None) -> Callable[P, R_co]: ...


def advance(op: Op[Any], reply: Any, error: BaseException | None) -> tuple[bool, Any]:
    """Send ``op`` a call's response (or throw it the call's error).

    Returns:
        ``(False, next call)`` while the operation needs calls, then
        ``(True, its value)``.
    """
    try:
        return False, (op.throw(error) if error is not None else op.send(reply))
    except StopIteration as stop:
        return True, stop.value


def _signature(op: Callable[..., Any]) -> inspect.Signature:
    # The method returns what the operation returns, not the generator.
    signature = inspect.signature(op)
    returns = signature.return_annotation
    if isinstance(returns, str) and returns.startswith("Op[") and returns.endswith("]"):
        signature = signature.replace(return_annotation=returns[3:-1])
    return signature


def _with_return(method: Any, op: Callable[..., Any], returns: str) -> None:
    method.__signature__ = inspect.signature(op).replace(return_annotation=returns)


def pages(make: Callable[Concatenate[Any, P], JobPages]) -> Method[P, Iterator[JobInfo]]:
    """A blocking iterator method over the pages ``make`` describes."""

    @functools.wraps(make)
    def method(self: Any, *args: Any, **kwargs: Any) -> Iterator[JobInfo]:
        listing = make(self, *args, **kwargs)
        while (page := listing.next_page()) is not None:
            yield from self._drive(page)

    _with_return(method, make, "Iterator[JobInfo]")
    return cast("Method[P, Iterator[JobInfo]]", method)  # (as functools.wraps types it: no __get__)


def async_pages(
    make: Callable[Concatenate[Any, P], JobPages],
) -> Method[P, AsyncIterator[JobInfo]]:
    """An asynchronous iterator method over the pages ``make`` describes."""

    @functools.wraps(make)
    async def method(self: Any, *args: Any, **kwargs: Any) -> AsyncIterator[JobInfo]:
        listing = make(self, *args, **kwargs)
        while (page := listing.next_page()) is not None:
            for job in await self._drive(page):
                yield job

    _with_return(method, make, "AsyncIterator[JobInfo]")
    return cast("Method[P, AsyncIterator[JobInfo]]", method)  # (as in pages)


def blocking(op: Callable[Concatenate[Any, P], Op[T]]) -> Method[P, T]:
    """A blocking method running ``op`` through ``self._drive``."""

    @functools.wraps(op)
    def method(self: Any, *args: P.args, **kwargs: P.kwargs) -> T:
        return cast(T, self._drive(op(self, *args, **kwargs)))

    method.__signature__ = _signature(op)  # type: ignore[attr-defined]
    return cast("Method[P, T]", method)  # (as in pages)


def coroutine(op: Callable[Concatenate[Any, P], Op[T]]) -> Method[P, Coroutine[Any, Any, T]]:
    """A coroutine method running ``op`` through ``await self._drive``."""

    @functools.wraps(op)
    async def method(self: Any, *args: P.args, **kwargs: P.kwargs) -> T:
        return cast(T, await self._drive(op(self, *args, **kwargs)))

    method.__signature__ = _signature(op)  # type: ignore[attr-defined]
    return cast("Method[P, Coroutine[Any, Any, T]]", method)  # (as in pages)
