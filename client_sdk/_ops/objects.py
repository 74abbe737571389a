"""Uploaded objects: ``scatter`` a value once, then refer to it from jobs; ``delete_object``.

A value is cloudpickled (buffers out of band) and named by the SHA-256 of
its bytes, so an object the server already holds is never sent again; a new
one goes up in chunks of a ``PutObject`` client stream.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from client_sdk import _pickle
from client_sdk._ops.base import Session
from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk._sansio import Call, Op
from client_sdk.errors import NotFound
from client_sdk.types import ObjectRef

logger = logging.getLogger(__name__)

#: Bytes per message of an upload (the server accepts up to 64 MiB per message).
UPLOAD_CHUNK = 1024 * 1024
#: Deadline of an upload, in seconds.
UPLOAD_DEADLINE = 3600.0


class Objects(Session):
    """The operations on uploaded objects."""

    def scatter(self, value: Any) -> Op[ObjectRef]:
        """Upload ``value`` once; jobs then take the returned reference in its place.

        The value is cloudpickled (NumPy and Arrow buffers out of band) and
        named by the SHA-256 of those bytes. If the server already holds it,
        nothing is sent; otherwise it is streamed in chunks, checked on
        arrival, and loaded on the cluster (never in the server process).

        Args:
            value: Any picklable value (an array, a DataFrame, a model...).

        Returns:
            An :class:`client_sdk.ObjectRef` for ``submit``, ``map``, ``run``
            and Dask work.

        Raises:
            VersionMismatch: This side cannot send pickled data to the server.
            PermissionDenied: The caller lacks the 'code' permission.
            ResourceExhausted: Larger than the server accepts.
        """
        yield from self._check_versions()
        data, sizes, sha = _pickle.encode_object_pieces(value)
        object_id = f"sha256:{sha}"
        try:
            held = yield Call("GetObject", pb.GetObjectRequest(object_id=object_id))
            return ObjectRef(held.object.object_id, held.object.size_bytes)
        except NotFound:
            pass

        def messages() -> Iterator[pb.PutObjectRequest]:
            header = pb.ObjectHeader(sha256=sha, size_bytes=len(data), segment_sizes=sizes)
            yield pb.PutObjectRequest(header=header)
            for start in range(0, len(data), UPLOAD_CHUNK):
                yield pb.PutObjectRequest(chunk=data[start : start + UPLOAD_CHUNK])

        response = yield Call("PutObject", messages(), UPLOAD_DEADLINE)
        return ObjectRef(response.object.object_id, response.object.size_bytes)

    def delete_object(self, ref: ObjectRef) -> Op[bool]:
        """Free an uploaded object on the server now; returns whether it was held."""
        request = pb.DeleteObjectRequest(object_id=ref.object_id)
        response: pb.DeleteObjectResponse = yield Call("DeleteObject", request)
        return response.deleted
