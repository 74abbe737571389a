"""Objects callers upload: received, checked, loaded on the cluster, held, shared, freed.

:class:`Uploads` takes an upload (its bytes hashed as they arrive), scatters
it to a worker, loads it there, and holds the resulting future in a
:class:`server.objects.ObjectStore` for its owner; jobs name it by its
SHA-256. :class:`SharedUploads` is the same with replicas: the rule is that
**an object exists while its dataset is published on the cluster**, every
use asks the scheduler, and the shared store records each use so that any
replica's janitor can end an object unused through all of them.

:class:`UploadLimits` bounds what uploads in progress may take: how many one
caller may have at once (``--max-uploads-per-caller``), how many bytes they
may hold together (``--max-upload-bytes-per-caller``), and how many bytes all
callers' uploads may hold together (``--max-upload-bytes``), counted as the
bytes arrive, never reserved for what a header announces (though a header
announcing more than could ever fit is refused at once). Past any of them, the
upload is refused with RESOURCE_EXHAUSTED naming the flag, and the bytes it held
are given back; the other uploads go on. That is all the memory uploads take in
the server: an upload's bytes are held here only until they are scattered to a
worker, and a held object lives on the cluster's workers (bounded by their
``--memory-limit``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from typing import Any

from server import objects
from server.auth import Caller
from server.cluster import SCHEDULER_TIMEOUT, Cluster
from server.cluster_results import DIRECT_GATHER_TIMEOUT
from server.errors import RETRY_DELAY, NotFound, PermissionDenied, ResourceExhausted, Unavailable
from server.jobs import JobTable, new_job_id

logger = logging.getLogger(__name__)


#: Defaults of --max-uploads-per-caller and --max-upload-bytes-per-caller.
MAX_UPLOADS_PER_CALLER = 4
MAX_UPLOAD_BYTES_PER_CALLER = 4 * 1024**3
#: A default of --max-upload-bytes for parts built alone (the server's own
#: default is a quarter of the machine's memory: Settings.upload_bytes_bound).
MAX_UPLOAD_BYTES = 8 * 1024**3


class UploadLimits:
    """Uploads in progress: per caller, how many and the bytes they hold; in all,
    the bytes they hold.

    Args:
        max_uploads: Most uploads one caller may have in progress.
        max_bytes: Most bytes one caller's uploads in progress may hold.
        max_total_bytes: Most bytes all callers' uploads in progress may hold.
    """

    def __init__(
        self, max_uploads: int, max_bytes: int, max_total_bytes: int = MAX_UPLOAD_BYTES
    ) -> None:
        self.max_uploads = max_uploads
        self.max_bytes = max_bytes
        self.max_total_bytes = max_total_bytes
        self._uploads: collections.Counter[str] = collections.Counter()
        self._bytes: collections.Counter[str] = collections.Counter()
        self._total_uploads = 0
        self._total_bytes = 0

    @contextlib.contextmanager
    def admit(self, owner: str, size: int) -> Iterator[Callable[[int], None]]:
        """Count one upload of ``owner`` announcing ``size`` bytes while the block runs.

        Yields the function that reserves each chunk's bytes as it arrives;
        they are given back when the block ends.

        Nothing is reserved for ``size``, what the header announces; but an
        upload that could never fit (``size`` past what one caller's uploads,
        or all uploads, may hold) is refused at once, before its bytes are sent.

        Raises:
            ResourceExhausted: ``owner`` has as many uploads in progress as it
                may, or ``size`` (or a chunk, with the bytes already held)
                exceeds what its uploads, or all uploads, may hold.
        """
        if size > self.max_bytes:
            raise self._too_many_bytes(owner, size, retry=False)
        if size > self.max_total_bytes:
            raise self._too_many_in_all(size, retry=False)
        if self._uploads[owner] >= self.max_uploads:
            raise ResourceExhausted(
                f"caller {owner!r} has {self._uploads[owner]} uploads in progress, the most "
                f"this server takes at once (--max-uploads-per-caller={self.max_uploads}); "
                f"finish one first",
                reason="CALLER_UPLOAD_LIMIT",
                metadata={
                    "caller": owner,
                    "limit_name": "max_uploads_per_caller",
                    "limit": self.max_uploads,
                },
                retry_delay=RETRY_DELAY,
            )
        self._uploads[owner] += 1
        self._total_uploads += 1
        held = 0

        def reserve(n: int) -> None:
            nonlocal held
            if self._bytes[owner] + n > self.max_bytes:
                raise self._too_many_bytes(owner, self._bytes[owner] + n)
            if self._total_bytes + n > self.max_total_bytes:
                raise self._too_many_in_all(self._total_bytes + n)
            self._bytes[owner] += n
            self._total_bytes += n
            held += n

        try:
            yield reserve
        finally:
            self._uploads[owner] -= 1
            self._bytes[owner] -= held
            self._total_uploads -= 1
            self._total_bytes -= held
            if not self._uploads[owner]:
                del self._uploads[owner]
                self._bytes.pop(owner, None)

    def _too_many_bytes(self, owner: str, wanted: int, retry: bool = True) -> ResourceExhausted:
        return ResourceExhausted(
            f"caller {owner!r}'s uploads in progress would hold {wanted:,} bytes; this server "
            f"holds at most {self.max_bytes:,} for one caller's uploads at once "
            f"(--max-upload-bytes-per-caller)",
            reason="CALLER_UPLOAD_BYTES_LIMIT",
            metadata={
                "caller": owner,
                "limit_name": "max_upload_bytes_per_caller",
                "limit": self.max_bytes,
                "bytes": wanted,
            },
            retry_delay=RETRY_DELAY if retry else None,
        )

    def _too_many_in_all(self, wanted: int, retry: bool = True) -> ResourceExhausted:
        return ResourceExhausted(
            f"the uploads in progress on this server would hold {wanted:,} bytes; it holds at "
            f"most {self.max_total_bytes:,} for all callers' uploads at once "
            f"(--max-upload-bytes)" + ("; retry when others have finished" if retry else ""),
            reason="SERVER_UPLOAD_BYTES_LIMIT",
            metadata={
                "limit_name": "max_upload_bytes",
                "limit": self.max_total_bytes,
                "bytes": wanted,
            },
            retry_delay=RETRY_DELAY if retry else None,
        )

    def in_progress(self, owner: str | None = None) -> tuple[int, int]:
        """``owner``'s uploads in progress and the bytes they hold (``None``: everyone's)."""
        if owner is None:
            return self._total_uploads, self._total_bytes
        return self._uploads.get(owner, 0), self._bytes.get(owner, 0)


class Uploads:
    """Uploaded objects of a server alone with its store; see the module docstring.

    Args:
        cluster: Where objects are loaded and held.
        store: The job store (with replicas, it records each object's uses).
        ttl: Seconds an unused object is kept.
        max_bytes: The largest upload taken.
        max_uploads_per_caller: Most uploads one caller may have in progress.
        max_upload_bytes_per_caller: Most bytes they may hold together.
        max_upload_bytes: Most bytes all callers' uploads in progress may
            hold together.
    """

    def __init__(
        self,
        cluster: Cluster,
        store: JobTable,
        ttl: float,
        max_bytes: int,
        max_uploads_per_caller: int = MAX_UPLOADS_PER_CALLER,
        max_upload_bytes_per_caller: int = MAX_UPLOAD_BYTES_PER_CALLER,
        max_upload_bytes: int = MAX_UPLOAD_BYTES,
    ) -> None:
        self.cluster = cluster
        self.store = store
        self.held = objects.ObjectStore(ttl, max_bytes)
        self.limits = UploadLimits(
            max_uploads_per_caller, max_upload_bytes_per_caller, max_upload_bytes
        )

    async def put(
        self,
        caller: Caller,
        sha256: str,
        size: int,
        segment_sizes: Sequence[int],
        chunks: AsyncIterator[bytes],
    ) -> tuple[objects.StoredObject, bool]:
        """Take an upload, check it, load it on the cluster and hold it.

        See :meth:`server.core.ComputeCore.put_object`.
        """
        self.authorize(caller)
        object_id = objects.check_object_id(f"sha256:{sha256}")
        self.held.check_upload(size)
        existing = await self._existing(caller, object_id)
        if existing is not None:
            return existing, True
        self.cluster.check_ok()
        with self.limits.admit(caller.name, size) as reserve:
            raw = await self._receive(chunks, size, segment_sizes, sha256, reserve)
        client = self.cluster.client
        future = client.submit(
            objects.load_on_worker(),
            raw,
            list(segment_sizes),
            pure=False,
            key=f"object-{sha256[:16]}-{new_job_id()[:8]}",
        )
        error = await future.exception()
        del raw
        if future.status != "finished":
            raise objects.not_loadable(object_id, error or RuntimeError(future.status))
        stored = await self._keep(caller, object_id, size, future)
        logger.info("object=%s event=stored size=%d owner=%s", object_id, size, caller.name)
        return stored, False

    async def _receive(
        self,
        chunks: AsyncIterator[bytes],
        size: int,
        segment_sizes: Sequence[int],
        sha256: str,
        reserve: Callable[[int], None],
    ) -> Any:
        """Receive an upload's bytes and scatter them to a worker; the cluster's future."""
        data = await objects.receive(chunks, size, segment_sizes, sha256, reserve)
        client = self.cluster.client
        # The bytearray as is (Dask sends it without a copy), straight to a
        # worker of our own cluster: through its scheduler, in this process,
        # the bytes would be held here once more.
        if self.cluster.owned:
            try:
                return await asyncio.wait_for(
                    client.scatter(data, hash=False, direct=True), DIRECT_GATHER_TIMEOUT
                )
            except asyncio.TimeoutError:
                logger.warning("a direct scatter stalled; scattering through the scheduler")
        return await client.scatter(data, hash=False)

    @staticmethod
    def authorize(caller: Caller) -> None:
        """Raise :class:`PermissionDenied` unless ``caller`` may upload objects."""
        if not caller.can("code"):
            raise PermissionDenied(
                f"caller {caller.name!r} may not upload objects: loading them runs pickled code, "
                "which needs the 'code' permission",
                reason="PERMISSION_CODE_REQUIRED",
                metadata={"caller": caller.name, "permission": "code"},
            )

    async def _keep(
        self, caller: Caller, object_id: str, size: int, future: Any
    ) -> objects.StoredObject:
        """Hold a freshly loaded object."""
        return self.held.add(caller.name, object_id, size, future)

    async def _existing(self, caller: Caller, object_id: str) -> objects.StoredObject | None:
        """The object if held, else ``None``."""
        try:
            return (await self.holding(caller, [object_id]))[object_id]
        except NotFound:
            return None

    async def holding(self, caller: Caller, ids: Iterable[str]) -> dict[str, objects.StoredObject]:
        """The caller's objects ``ids``, each marked as used now.

        Raises:
            InvalidArgument: An id is malformed.
            NotFound: One is not held (the first, by id, is named).
        """
        wanted = sorted({objects.check_object_id(object_id) for object_id in ids})
        return {object_id: self.held.get(caller.name, object_id) for object_id in wanted}

    async def stand_ins(self, caller: Caller, ids: set[str], scheduler: str) -> dict[str, Any]:
        """What stands in for held objects in a job: the cluster's futures, or, for the
        local schedulers, the values themselves (fetched from the cluster)."""
        held = await self.holding(caller, ids)
        if scheduler == "distributed":
            return {object_id: stored.future for object_id, stored in held.items()}
        self.cluster.check_ok()
        return {object_id: await stored.future for object_id, stored in held.items()}

    async def get(self, object_id: str, caller: Caller) -> objects.StoredObject:
        """A held object of ``caller``'s (see ComputeCore.get_object)."""
        return (await self.holding(caller, [object_id]))[object_id]

    async def delete(self, object_id: str, caller: Caller) -> bool:
        """Free an object; returns whether it was held."""
        return self.held.delete(caller.name, object_id)

    def expire(self, now: float) -> None:
        """Drop the objects held here that went unused for their ttl."""
        dropped = self.held.expire(now)
        if dropped:
            logger.info("expired %d objects unused for %gs", len(dropped), self.held.ttl)

    async def sweep(self, now: float) -> None:
        """End objects unused through every replica (alone: nothing more to do)."""

    def clear(self) -> None:
        """Let go of every object (at shutdown)."""
        self.held.clear()


class SharedUploads(Uploads):
    """Uploaded objects shared by replicas; see the module docstring."""

    def __init__(
        self, cluster: Cluster, store: JobTable, ttl: float, max_bytes: int, **limits: int
    ) -> None:
        super().__init__(cluster, store, ttl, max_bytes, **limits)
        assert store.registry is not None, "a shared store has a replica registry"
        self.registry = store.registry
        # When this replica last recorded a use of each object.
        self._uses: dict[tuple[str, str], float] = {}

    async def _keep(
        self, caller: Caller, object_id: str, size: int, future: Any
    ) -> objects.StoredObject:
        """Publish a freshly loaded object on the cluster, then hold it.

        It is published (as :func:`server.objects.dataset_name`, holding its
        future and size) before it is held here, so every copy a replica holds
        has had its dataset. If another replica published the same object of
        the same caller meanwhile, that one is adopted and this one let go.

        Raises:
            Unavailable: It could not be published: nothing is kept here.
        """
        name = objects.dataset_name(caller.name, object_id)
        try:
            await asyncio.wait_for(
                self.cluster.client.publish_dataset(**{name: {"future": future, "size": size}}),
                SCHEDULER_TIMEOUT,
            )
        except KeyError:  # uploaded through another replica at the same time
            return (await self.holding(caller, [object_id]))[object_id]
        except Exception as exc:
            raise Unavailable(
                f"object {object_id} was loaded but could not be published for the other "
                f"replicas ({type(exc).__name__}: {exc}); nothing was kept, upload it again",
                metadata={"object_id": object_id},
            ) from exc
        self._used(caller.name, [object_id], force=True)
        return self.held.add(caller.name, object_id, size, future)

    async def holding(self, caller: Caller, ids: Iterable[str]) -> dict[str, objects.StoredObject]:
        """The caller's objects ``ids``, as the cluster's datasets say, each marked as used.

        The scheduler is asked about all of ``ids`` at once: a copy held
        here whose dataset is gone (deleted through any replica, or unused
        through all of them for ``object_ttl``) is dropped and not served; a
        published object not held here is adopted. So no replica serves an
        object deleted through another once the deletion has answered.

        Raises:
            InvalidArgument: An id is malformed.
            NotFound: One is not held (the first, by id, is named).
            Unavailable: The scheduler does not answer, so whether the
                objects still exist is not known.
        """
        owner = caller.name
        wanted = sorted({objects.check_object_id(object_id) for object_id in ids})
        if self.cluster.client is None:
            raise Unavailable(self.cluster.outage_message())
        self.cluster.check_ok()
        names = [objects.dataset_name(owner, object_id) for object_id in wanted]
        client = self.cluster.client
        try:
            # One name per call: older distributed versions take no list of names.
            published = await asyncio.wait_for(
                asyncio.gather(*(client.get_dataset(name, default=None) for name in names)),
                SCHEDULER_TIMEOUT,
            )
        except Exception as exc:
            raise Unavailable(
                f"could not ask the Dask scheduler whether the objects still exist "
                f"({type(exc).__name__}: {exc}); retry"
            ) from exc
        held = {}
        for object_id, data in zip(wanted, published, strict=True):
            copy = self.held.has(owner, object_id)
            if data is None:
                if copy is not None and self.held.drop(copy):
                    logger.info("object=%s event=gone owner=%s", object_id, owner)
                raise self.held.not_found(object_id)
            if copy is None:
                copy = self.held.add(owner, object_id, data["size"], data["future"], adopted=True)
                logger.info("object=%s event=adopted owner=%s", object_id, owner)
            held[object_id] = copy
        self._used(owner, wanted)
        return held

    def _used(self, owner: str, ids: Iterable[str], force: bool = False) -> None:
        """Record in the shared store that ``owner``'s objects ``ids`` were used now:
        at most once per object every tenth of ``object_ttl`` from this replica
        (or at once, ``force``), off the event loop."""
        now = time.time()
        every = self.held.ttl / 10
        due = [
            object_id
            for object_id in ids
            if force or now - self._uses.get((owner, object_id), 0.0) >= every
        ]
        for object_id in due:
            self._uses[(owner, object_id)] = now
        if due:  # (stamped by the database's clock, not this replica's)
            self.registry.use_objects([(owner, object_id) for object_id in due])

    async def delete(self, object_id: str, caller: Caller) -> bool:
        """Free an object; its dataset is unpublished before this returns, so every
        replica finds it gone at its next use.

        Raises:
            Unavailable: The scheduler does not answer: the object may still
                be published, so delete it again.
        """
        held = self.held.delete(caller.name, object_id)
        if self.cluster.client is None:
            raise Unavailable(self.cluster.outage_message())
        self.cluster.check_ok()
        name = objects.dataset_name(caller.name, object_id)
        client = self.cluster.client
        try:
            published = await asyncio.wait_for(
                client.get_dataset(name, default=None), SCHEDULER_TIMEOUT
            )
            if published is not None:
                await asyncio.wait_for(client.unpublish_dataset(name), SCHEDULER_TIMEOUT)
        except Exception as exc:
            raise Unavailable(
                f"object {object_id} could not be unpublished for the other replicas "
                f"({type(exc).__name__}: {exc}); delete it again",
                metadata={"object_id": object_id},
            ) from exc
        self.registry.forget_object(caller.name, object_id)
        self._uses.pop((caller.name, object_id), None)
        return held or published is not None

    def expire(self, now: float) -> None:
        super().expire(now)
        # (The copies held here only: the cluster's go by the shared uses.)
        ttl = self.held.ttl
        self._uses = {k: t for k, t in self._uses.items() if t >= now - ttl}

    async def sweep(self, now: float) -> None:
        """Unpublish the objects unused for ``object_ttl`` through every replica,
        whichever uploaded them (each such object is taken by one replica's
        janitor), and drop the copies held here whose dataset is gone. An
        object that could not be unpublished is taken again at the next round.
        """
        client = self.cluster.client
        if client is None or not self.cluster.ok:
            return
        ttl = self.held.ttl
        try:
            stale = await self.registry.take_unused_objects(ttl)
        except Exception as exc:  # the next round looks again
            logger.warning("could not look for objects unused through every replica: %s", exc)
            stale = []
        try:
            if stale:
                names = [objects.dataset_name(*key) for key in stale]
                try:
                    await asyncio.wait_for(client.unpublish_dataset(names), SCHEDULER_TIMEOUT)
                except BaseException:
                    self.registry.use_objects(stale, ago=ttl + 1)  # still due: the next round
                    raise
                logger.info(
                    "unpublished %d objects unused for %gs through every replica", len(stale), ttl
                )
            copies = self.held.held()
            if not copies:
                return
            published = set(await asyncio.wait_for(client.list_datasets(), SCHEDULER_TIMEOUT))
        except OSError as exc:  # a timeout or a lost connection: the next round tries again
            logger.warning("could not check the objects published for other replicas: %s", exc)
            return
        gone = [c for c in copies if objects.dataset_name(c.owner, c.object_id) not in published]
        dropped = sum(self.held.drop(copy) for copy in gone)
        if dropped:
            logger.info("dropped %d objects deleted or expired through other replicas", dropped)
