"""Paging of job listings: the page size and the opaque token that continues a listing.

Plain Python (no ``grpc``, no SQL): :class:`server.jobs.MemoryJobTable` and
:class:`server.store.SqlJobTable` page the same way.
"""

from __future__ import annotations

import base64

from server.errors import InvalidArgument

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100


def page_bounds(page_size: int, page_token: str) -> tuple[int, int | None]:
    """Validate paging input: returns (page size, the ``seq`` to continue below).

    Raises:
        InvalidArgument: ``page_size`` is out of range or the token is not one of ours.
    """
    if page_size < 0 or page_size > MAX_PAGE_SIZE:
        raise InvalidArgument(
            f"page_size must be between 0 and {MAX_PAGE_SIZE}, got {page_size}",
            field="page_size",
            reason="INVALID_PAGE_SIZE",
            metadata={"limit": MAX_PAGE_SIZE},
        )
    size = page_size or DEFAULT_PAGE_SIZE
    if not page_token:
        return size, None
    try:
        text = base64.urlsafe_b64decode(page_token.encode("ascii")).decode("ascii")
        prefix, _, number = text.partition(":")
        if prefix != "seq" or not number.isdigit():
            raise ValueError(text)
        return size, int(number)
    except (ValueError, UnicodeError) as exc:
        raise InvalidArgument(
            "page_token is not valid: pass the next_page_token of a previous ListJobs response",
            field="page_token",
            reason="INVALID_PAGE_TOKEN",
        ) from exc


def make_page_token(seq: int) -> str:
    """The opaque token that continues a listing below ``seq``."""
    return base64.urlsafe_b64encode(f"seq:{seq}".encode("ascii")).decode("ascii")
