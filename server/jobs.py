"""Job records and the job table: plain Python, no gRPC, no Dask.

The :class:`JobTable` interface is all the rest of the server knows of where
records live, so that durable or shared storage can replace
:class:`MemoryJobTable` without touching the core or the servicer.
"""

from __future__ import annotations

import base64
import concurrent.futures
import dataclasses
import enum
import secrets
import threading
import time
from collections.abc import Callable, Collection, Iterable
from typing import Any, Protocol

from server.errors import InvalidArgument, JobNotFound

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100


class JobState(str, enum.Enum):
    """Where a job is in its life."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """Whether the job has reached its final state."""
        return self in _FINISHED


_FINISHED = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


class JobKind(str, enum.Enum):
    """What kind of work a job carries."""

    FUNCTION = "function"
    PICKLED_CALL = "pickled_call"
    GRAPH = "graph"


@dataclasses.dataclass(frozen=True)
class JobError:
    """Why a job failed."""

    type: str
    message: str
    traceback: str = ""
    pickled_exception: bytes = b""


@dataclasses.dataclass(frozen=True)
class JobRecord:
    """A job's record, as the job table keeps it.

    Times are seconds since the epoch; ``None`` until they happen.
    """

    job_id: str
    state: JobState
    scheduler: str
    kind: JobKind
    target: str
    name: str = ""
    result_format: str = "auto"
    submit_time: float = 0.0
    start_time: float | None = None
    finish_time: float | None = None
    error: JobError | None = None
    cancel_reason: str = ""
    result_available: bool = False
    owner: str = ""
    request_id: str = ""
    retryable: bool = False
    seq: int = 0

    def replace(self, **changes: Any) -> JobRecord:
        """A copy with ``changes`` applied (a field it lacks is a ``TypeError``).

        As ``dataclasses.replace``, without its per-call cost: every job's
        record is replaced a few times on its way.
        """
        if not changes.keys() <= _RECORD_FIELDS:
            unknown = ", ".join(sorted(changes.keys() - _RECORD_FIELDS))
            raise TypeError(f"JobRecord has no field {unknown}")
        copy = object.__new__(JobRecord)
        fields = copy.__dict__
        fields.update(self.__dict__)
        fields.update(changes)
        return copy


_RECORD_FIELDS = frozenset(f.name for f in dataclasses.fields(JobRecord))


def new_job_id() -> str:
    """A fresh, unguessable job id (128 random bits, in hex) that says nothing
    about the server that made it."""
    return secrets.token_hex(16)


class JobTable(Protocol):
    """Where job records live."""

    def insert(self, record: JobRecord, request: dict[str, Any] | None = None) -> JobRecord:
        """Store a new record (and, for a retryable job, its request); returns it with ``seq``."""

    def insert_many(
        self, items: list[tuple[JobRecord, dict[str, Any] | None]]
    ) -> concurrent.futures.Future[list[JobRecord]]:
        """Store new records (with their requests); a future of them with ``seq``, once stored."""

    def insert_later(
        self, items: list[tuple[JobRecord, dict[str, Any] | None]], delay: float
    ) -> list[JobRecord]:
        """Keep new records at once and store them within ``delay`` seconds (for
        jobs whose caller waits for their end); returns them as kept."""

    def get(self, job_id: str) -> JobRecord:
        """The record of ``job_id``; raises :class:`JobNotFound`."""

    def update(self, job_id: str, **changes: Any) -> JobRecord:
        """Apply ``changes`` to a record, store it at once, and return the new record."""

    def update_soon(self, job_id: str, *, delay: float = 0.0, **changes: Any) -> JobRecord:
        """Apply ``changes`` now and store them shortly (after ``delay``, unless superseded)."""

    def update_stored(
        self, job_id: str, **changes: Any
    ) -> tuple[JobRecord, concurrent.futures.Future[JobRecord]]:
        """Apply ``changes`` now; the new record, and a future of it as stored, once stored."""

    def list(
        self,
        states: Collection[JobState] = (),
        page_size: int = 0,
        page_token: str = "",
        owner: str | None = None,
    ) -> tuple[list[JobRecord], str]:
        """A page of records, newest first, and the token of the next page ("" at the end).

        ``owner`` keeps only that caller's jobs; ``None`` keeps everyone's.
        """

    def delete(self, job_ids: Iterable[str]) -> None:
        """Forget records."""

    def finished_before(self, when: float) -> list[str]:
        """Ids of finished jobs whose finish time is before ``when``."""

    def oldest_finished(self, count: int) -> list[str]:
        """Ids of the ``count`` oldest finished jobs."""

    def unfinished(self) -> list[JobRecord]:
        """Records still queued or running (after a restart: jobs it interrupted)."""

    def find_request(self, owner: str, request_id: str) -> JobRecord | None:
        """The job ``owner`` submitted with idempotency key ``request_id``, if any."""

    def find_requests(self, owner: str, request_ids: Iterable[str]) -> dict[str, JobRecord]:
        """:meth:`find_request` for many keys at once: the jobs found, by key."""

    def states_of(self, job_ids: Collection[str]) -> dict[str, JobState]:
        """The stored states of ``job_ids``, as other replicas may have set them."""

    def refresh(self, job_id: str) -> JobRecord:
        """The stored record, read again."""

    def expire_results(self, before: float) -> list[str]:
        """Mark results of jobs finished before ``before`` unavailable; returns their ids."""

    def request_of(self, job_id: str) -> dict[str, Any] | None:
        """The stored request of an unfinished retryable job."""

    def store_result(
        self, job_id: str, blob: bytes | None, stored: Callable[[], None] | None = None
    ) -> None:
        """Keep (or drop, with ``None``) a small pickled result; call ``stored`` once kept."""

    def stored_result(self, job_id: str) -> bytes | None:
        """The result stored with the record, if any."""

    def forget(self, job_id: str) -> None:
        """Drop any in-memory copy of a finished record."""

    def use_objects(self, keys: Iterable[tuple[str, str]], now: float) -> None:
        """Record that uploaded objects (owner, object id) were used at ``now``."""

    def forget_object(self, owner: str, object_id: str) -> None:
        """Drop the record of a deleted object's uses."""

    def take_unused_objects(self, before: float) -> list[tuple[str, str]]:
        """Remove and return the objects last used before ``before``."""

    def close(self) -> None:
        """Release resources."""

    def __len__(self) -> int: ...


def page_bounds(page_size: int, page_token: str) -> tuple[int, int | None]:
    """Validate paging input: returns (page size, the ``seq`` to continue below).

    Raises:
        InvalidArgument: ``page_size`` is out of range or the token is not one of ours.
    """
    if page_size < 0 or page_size > MAX_PAGE_SIZE:
        raise InvalidArgument(f"page_size must be between 0 and {MAX_PAGE_SIZE}, got {page_size}")
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
            "page_token is not valid: pass the next_page_token of a previous ListJobs response"
        ) from exc


def make_page_token(seq: int) -> str:
    """The opaque token that continues a listing below ``seq``."""
    return base64.urlsafe_b64encode(f"seq:{seq}".encode("ascii")).decode("ascii")


class MemoryJobTable:
    """A job table in the server's memory (lost on restart).

    Thread-safe, so executor threads may read it; every method is O(1) except
    listing and expiry, which scan.
    """

    def __init__(self) -> None:
        self._records: dict[str, JobRecord] = {}
        self._lock = threading.Lock()
        self._seq = 0

    durable = False

    def insert(self, record: JobRecord, request: dict[str, Any] | None = None) -> JobRecord:
        with self._lock:
            if record.job_id in self._records:
                raise ValueError(f"job {record.job_id} exists")
            self._seq += 1
            record = record.replace(seq=self._seq, submit_time=record.submit_time or time.time())
            self._records[record.job_id] = record
            return record

    def insert_many(
        self, items: list[tuple[JobRecord, dict[str, Any] | None]]
    ) -> concurrent.futures.Future[list[JobRecord]]:
        future: concurrent.futures.Future[list[JobRecord]] = concurrent.futures.Future()
        try:
            future.set_result([self.insert(record, request) for record, request in items])
        except Exception as exc:
            future.set_exception(exc)
        return future

    def insert_later(
        self, items: list[tuple[JobRecord, dict[str, Any] | None]], delay: float
    ) -> list[JobRecord]:
        return [self.insert(record, request) for record, request in items]

    def get(self, job_id: str) -> JobRecord:
        try:
            return self._records[job_id]
        except KeyError:
            raise JobNotFound(f"no job with id {job_id!r} (never accepted, or expired)") from None

    def update(self, job_id: str, **changes: Any) -> JobRecord:
        with self._lock:
            record = self.get(job_id).replace(**changes)
            self._records[job_id] = record
            return record

    def update_soon(self, job_id: str, *, delay: float = 0.0, **changes: Any) -> JobRecord:
        return self.update(job_id, **changes)

    def update_stored(
        self, job_id: str, **changes: Any
    ) -> tuple[JobRecord, concurrent.futures.Future[JobRecord]]:
        record = self.update(job_id, **changes)
        stored: concurrent.futures.Future[JobRecord] = concurrent.futures.Future()
        stored.set_result(record)
        return record, stored

    def list(
        self,
        states: Collection[JobState] = (),
        page_size: int = 0,
        page_token: str = "",
        owner: str | None = None,
    ) -> tuple[list[JobRecord], str]:
        size, below = page_bounds(page_size, page_token)
        wanted = frozenset(states)
        with self._lock:
            records = list(self._records.values())
        page: list[JobRecord] = []
        for record in reversed(records):  # dicts keep insertion (= seq) order
            if below is not None and record.seq >= below:
                continue
            if wanted and record.state not in wanted:
                continue
            if owner is not None and record.owner != owner:
                continue
            if len(page) == size:
                return page, make_page_token(page[-1].seq)
            page.append(record)
        return page, ""

    def delete(self, job_ids: Iterable[str]) -> None:
        with self._lock:
            for job_id in job_ids:
                self._records.pop(job_id, None)

    def finished_before(self, when: float) -> list[str]:
        with self._lock:
            return [
                r.job_id
                for r in self._records.values()
                if r.state.finished and r.finish_time is not None and r.finish_time < when
            ]

    def oldest_finished(self, count: int) -> list[str]:
        """Ids of the ``count`` oldest finished jobs."""
        with self._lock:
            out = []
            for r in self._records.values():
                if len(out) >= count:
                    break
                if r.state.finished:
                    out.append(r.job_id)
            return out

    def expire_results(self, before: float) -> list[str]:
        expired = []
        with self._lock:
            for record in self._records.values():
                if record.result_available and (record.finish_time or before) < before:
                    self._records[record.job_id] = record.replace(result_available=False)
                    expired.append(record.job_id)
        return expired

    def find_request(self, owner: str, request_id: str) -> JobRecord | None:
        return self.find_requests(owner, [request_id]).get(request_id)

    def find_requests(self, owner: str, request_ids: Iterable[str]) -> dict[str, JobRecord]:
        wanted = set(request_ids)
        found: dict[str, JobRecord] = {}
        with self._lock:
            for record in self._records.values():
                if record.request_id in wanted and record.owner == owner:
                    found.setdefault(record.request_id, record)
        return found

    def states_of(self, job_ids: Collection[str]) -> dict[str, JobState]:
        return {i: self._records[i].state for i in job_ids if i in self._records}

    def refresh(self, job_id: str) -> JobRecord:
        return self.get(job_id)

    # Nothing outlives the process: no orphans, requests or stored results.
    def unfinished(self) -> list[JobRecord]:
        return []

    def request_of(self, job_id: str) -> dict[str, Any] | None:
        return None

    def store_result(
        self, job_id: str, blob: bytes | None, stored: Callable[[], None] | None = None
    ) -> None:
        pass

    def stored_result(self, job_id: str) -> bytes | None:
        return None

    def forget(self, job_id: str) -> None:
        pass

    # Objects' uses matter to replicas sharing a store; memory is one server's.
    def use_objects(self, keys: Iterable[tuple[str, str]], now: float) -> None:
        pass

    def forget_object(self, owner: str, object_id: str) -> None:
        pass

    def take_unused_objects(self, before: float) -> list[tuple[str, str]]:
        return []

    def close(self) -> None:
        pass

    def __len__(self) -> int:
        return len(self._records)
