"""Objects uploaded once and held on the cluster, for jobs to use by reference.

An object is identified by the SHA-256 of its bytes (checked on arrival). Its
bytes are loaded on a worker, never in the server, and the loaded value stays
there as a future held for the object until it is deleted or unused for the
retention period. Objects belong to the caller that uploaded them.

Replicas that share a job store share objects through the cluster: each
uploaded object is also published as a Dask dataset named by
:func:`dataset_name`, and the dataset is what says whether the object exists.
:class:`server.core.ComputeCore` (its ``put_object`` and ``_held_objects``)
spells out the rule.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from server.errors import InvalidArgument, InvalidPayload, NotFound, ResourceExhausted

#: How pickled work names an object: a persistent id "dask-compute-object:<object_id>".
PERSISTENT_ID_PREFIX = "dask-compute-object:"
#: How a named call's JSON arguments name an object: {"$object": "<object_id>"}.
JSON_MARKER = "$object"
#: The start of the name of each object published on the cluster for other replicas.
DATASET_PREFIX = "dask-compute-object-"
#: Hex digits of the owner's SHA-256 in a dataset's name.
OWNER_DIGITS = 16

_OBJECT_ID = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclasses.dataclass
class StoredObject:
    """An object held on the cluster.

    Attributes:
        adopted: Taken from the dataset another replica published (see
            :func:`dataset_name`), not uploaded through this one. With
            replicas, a replica's expiry of any object drops only its own
            copy; the object itself ends when it has gone unused through all
            of them (see ``ComputeCore._sweep_objects``).
    """

    object_id: str
    owner: str
    size: int
    future: Any
    last_used: float
    adopted: bool = False


def check_object_id(object_id: str) -> str:
    """``object_id`` if it has the form "sha256:<64 hex digits>".

    Raises:
        InvalidArgument: It does not.
    """
    if not _OBJECT_ID.match(object_id or ""):
        raise InvalidArgument(
            f"object id {object_id[:80]!r} is not of the form 'sha256:' and 64 hex digits",
            field="object_id",
            reason="INVALID_OBJECT_ID",
        )
    return object_id


def dataset_name(owner: str, object_id: str) -> str:
    """The name of an object published on the cluster, for replicas sharing a job store.

    ``dask-compute-object-<owner>-<64 hex digits>``: the owner as the first
    :data:`OWNER_DIGITS` hex digits of the SHA-256 of its name (any caller
    name, even a certificate's, becomes safe for a Dask key), then the
    object's SHA-256. Two owners whose hashes began alike would share an
    object only if they uploaded the very same bytes.

    Raises:
        InvalidArgument: ``object_id`` is not of the form "sha256:<64 hex digits>".
    """
    digest = check_object_id(object_id).removeprefix("sha256:")
    owner_hash = hashlib.sha256(owner.encode("utf-8")).hexdigest()[:OWNER_DIGITS]
    return f"{DATASET_PREFIX}{owner_hash}-{digest}"


def is_json_marker(value: Any, marker: str = JSON_MARKER) -> bool:
    """Whether a decoded JSON value is a reference ``{marker: id}`` (an object's, by default)."""
    return isinstance(value, dict) and len(value) == 1 and marker in value


def json_marker_ids(value: Any) -> set[str]:
    """Object ids referenced anywhere in decoded JSON arguments."""
    if is_json_marker(value):
        return {check_object_id(str(value[JSON_MARKER]))}
    if isinstance(value, dict):
        return set().union(*(json_marker_ids(v) for v in value.values())) if value else set()
    if isinstance(value, (list, tuple)):
        return set().union(*(json_marker_ids(v) for v in value)) if value else set()
    return set()


def replace_json_markers(value: Any, objects: dict[str, Any], marker: str = JSON_MARKER) -> Any:
    """Decoded JSON arguments with each ``{marker: id}`` (by default ``{"$object": id}``)
    replaced by ``objects[id]``."""
    if is_json_marker(value, marker):
        return objects[value[marker]]
    if isinstance(value, dict):
        return {k: replace_json_markers(v, objects, marker) for k, v in value.items()}
    if isinstance(value, list):
        return [replace_json_markers(v, objects, marker) for v in value]
    if isinstance(value, tuple):
        return tuple(replace_json_markers(v, objects, marker) for v in value)
    return value


#: The fewest bytes of an upload hashed in one step (in a thread, while more arrive).
HASH_STEP = 4 * 1024 * 1024


async def receive(
    chunks: AsyncIterator[bytes],
    size: int,
    segment_sizes: Sequence[int],
    sha256: str | None = None,
    reserve: Callable[[int], None] | None = None,
) -> bytearray:
    """Collect an upload's bytes into one buffer, and check them against ``sha256`` if given.

    The buffer grows as bytes arrive (``size`` is only what the header
    announced: nothing is allocated for bytes that have not come), and each
    chunk is first charged to ``reserve``, which may refuse it by raising
    (see :class:`server.uploads.UploadLimits`). The bytes are hashed in a
    thread while the next ones arrive, so the check ends soon after the upload
    does and the event loop never hashes. Without ``sha256``, :func:`verify`
    checks them afterwards.

    Raises:
        InvalidArgument: Too many or too few bytes, or not the announced
            SHA-256; nothing is kept.
    """
    if sum(segment_sizes or [size]) != size:
        raise InvalidArgument(
            f"segment sizes add up to {sum(segment_sizes)}, not {size}",
            field="header.segment_sizes",
            reason="UPLOAD_SIZE_MISMATCH",
        )
    data = bytearray()
    digest = _ChunkHash() if sha256 is not None else None
    async for chunk in chunks:
        if len(data) + len(chunk) > size:
            raise InvalidArgument(
                f"the upload has more than the {size} bytes its header announced",
                field="chunk",
                reason="UPLOAD_SIZE_MISMATCH",
                metadata={"size_bytes": size},
            )
        if reserve is not None:
            reserve(len(chunk))
        data += chunk  # a large buffer grows in place (realloc), without copying what it holds
        if digest is not None:
            digest.add(chunk)
    if len(data) != size:
        raise InvalidArgument(
            f"the upload ended after {len(data)} of {size} bytes; nothing was kept, upload it again",
            field="chunk",
            reason="UPLOAD_INCOMPLETE",
            metadata={"size_bytes": size, "received_bytes": len(data)},
        )
    if digest is not None and sha256 is not None:  # one is None when the other is
        _check(await digest.hexdigest(), sha256)
    return data


class _ChunkHash:
    """The SHA-256 of an upload's chunks, hashed in a thread as they arrive.

    Chunks wait until at least :data:`HASH_STEP` bytes of them are pending; at
    most one hashing step runs at a time, so the steps keep their order.
    """

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._step: asyncio.Future | None = None

    def add(self, chunk: bytes) -> None:
        """Hash ``chunk`` after the ones before it (soon, in a thread)."""
        self._pending.append(chunk)
        self._pending_bytes += len(chunk)
        if self._step is not None and not self._step.done():
            return
        if self._pending_bytes >= HASH_STEP:
            self._step = self._hash()

    def _hash(self) -> asyncio.Future:
        pieces, self._pending, self._pending_bytes = self._pending, [], 0

        def update() -> None:
            for piece in pieces:
                self._digest.update(piece)

        return asyncio.get_running_loop().run_in_executor(None, update)

    async def hexdigest(self) -> str:
        """The hex SHA-256 of every chunk added."""
        if self._step is not None:
            await self._step
        if self._pending:
            await self._hash()
        return self._digest.hexdigest()


def _check(actual: str, sha256: str) -> None:
    if actual != sha256:
        raise InvalidArgument(
            f"the upload's SHA-256 is {actual}, not {sha256} as announced; nothing was kept",
            field="header.sha256",
            reason="UPLOAD_CHECKSUM_MISMATCH",
        )


def load_on_worker() -> Any:
    """The function that turns an object's bytes into its value on a worker.

    Made here so that cloudpickle sends it by value: workers of an existing
    cluster need not have this package installed.
    """

    def load_object(data: bytes, segment_sizes: list[int]) -> Any:
        import pickle

        view = memoryview(data)
        parts, position = [], 0
        for size in segment_sizes or [len(data)]:
            parts.append(view[position : position + size])
            position += size
        return pickle.loads(parts[0], buffers=parts[1:])

    return load_object


class ObjectStore:
    """The objects this server holds, by owner and id.

    Args:
        ttl: Seconds an unused object is kept.
        max_bytes: The largest object accepted.
    """

    def __init__(self, ttl: float, max_bytes: int) -> None:
        self.ttl = ttl
        self.max_bytes = max_bytes
        self._objects: dict[tuple[str, str], StoredObject] = {}

    def check_upload(self, size: int) -> None:
        """Refuse an upload larger than the limit before any byte of it is taken."""
        if size < 0:
            raise InvalidArgument(
                "size_bytes must not be negative", field="header.size_bytes", reason="NEGATIVE_SIZE"
            )
        if size > self.max_bytes:
            raise ResourceExhausted(
                f"the object's {size} bytes exceed this server's limit of {self.max_bytes} "
                "(max_object_bytes)",
                reason="OBJECT_TOO_LARGE",
                metadata={"limit_name": "max_object_bytes", "limit": self.max_bytes, "bytes": size},
            )

    def not_found(self, object_id: str) -> NotFound:
        """The error for an object that is not held."""
        return NotFound(
            f"no object {object_id} for this caller: it was never uploaded by this caller, "
            f"was deleted, or expired after {self.ttl:g}s unused; upload it with PutObject "
            "(the SDK's client.scatter) again",
            reason="OBJECT_NOT_FOUND",
            resource_type="object",
            resource_name=object_id,
            metadata={"object_id": object_id},
        )

    def get(self, owner: str, object_id: str) -> StoredObject:
        """The object, marked as used now.

        Raises:
            NotFound: Not held (never uploaded, deleted or expired).
        """
        stored = self._objects.get((owner, check_object_id(object_id)))
        if stored is None:
            raise self.not_found(object_id)
        stored.last_used = time.time()
        return stored

    def has(self, owner: str, object_id: str) -> StoredObject | None:
        """The object if held, else ``None``."""
        try:
            return self.get(owner, object_id)
        except NotFound:
            return None

    def add(
        self, owner: str, object_id: str, size: int, future: Any, adopted: bool = False
    ) -> StoredObject:
        """Hold a loaded object (``adopted``: see :class:`StoredObject`)."""
        stored = StoredObject(object_id, owner, size, future, time.time(), adopted)
        self._objects[(owner, object_id)] = stored
        return stored

    def delete(self, owner: str, object_id: str) -> bool:
        """Free an object; returns whether it was held."""
        return self._objects.pop((owner, check_object_id(object_id)), None) is not None

    def drop(self, stored: StoredObject) -> bool:
        """Free this very copy, unless another has taken its place; returns whether it did."""
        key = (stored.owner, stored.object_id)
        if self._objects.get(key) is not stored:
            return False
        del self._objects[key]
        return True

    def held(self) -> list[StoredObject]:
        """Every object held now."""
        return list(self._objects.values())

    def expire(self, now: float) -> list[StoredObject]:
        """Free objects unused for the retention period; returns them."""
        old = [key for key, obj in self._objects.items() if obj.last_used < now - self.ttl]
        return [self._objects.pop(key) for key in old]

    def clear(self) -> None:
        """Free every object."""
        self._objects.clear()


def not_loadable(object_id: str, exc: BaseException) -> InvalidPayload:
    """The error for bytes that a worker could not load."""
    return InvalidPayload(
        f"object {object_id}: the bytes could not be loaded on the cluster: "
        f"{type(exc).__name__}: {exc}",
        reason="OBJECT_NOT_LOADABLE",
        metadata={"object_id": object_id},
    )
