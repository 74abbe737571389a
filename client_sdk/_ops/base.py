"""What every operation may rely on: the client's settings and what it learned of the server.

:class:`Session` holds the target, the default deadline, the credentials and
the metadata of every call, and caches the server's versions and cluster
description. It owns the operations that fill those caches (``info``, the
version check before pickled work) and the two hooks each client fills in:
opening its channel and wrapping a job record in its own job type. The other
modules of this package add operations on top of it.
"""

from __future__ import annotations

import logging
from typing import Any

from client_sdk import _channel, _convert, _versions
from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk._sansio import Call, Op
from client_sdk.types import ClusterInfo, FunctionInfo, JobInfo, Versions

logger = logging.getLogger(__name__)


class Session:
    """A client's settings and its knowledge of the server, for the operations.

    Takes the arguments documented on :class:`client_sdk.ComputeClient`, then
    calls :meth:`_open` for the subclass to open its channel.

    Raises:
        ValueError: A malformed target, timeout or token.
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        timeout: float = _channel.DEFAULT_TIMEOUT,
        token: str | None = None,
        tls: _channel.TLS = False,
        check_versions: bool = True,
    ) -> None:
        self.target, scheme_tls = _channel.parse_target(target)
        if not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.timeout = float(timeout)
        self.check_versions = check_versions
        self._token_metadata = _channel.call_metadata(token)
        self._credentials = _channel.credentials(True if scheme_tls and not tls else tls)
        self._server_versions: Versions | None = None
        self._versions_ok = False
        self._cluster: ClusterInfo | None = None
        self._caller: str | None = None
        self._open()

    def _open(self) -> None:
        """Open the channel (each client its own kind)."""
        raise NotImplementedError

    @property
    def _metadata(self) -> tuple[tuple[str, str], ...] | None:
        """The metadata of a call made now: the token, and the caller's trace context."""
        return _channel.with_trace_context(self._token_metadata)

    @property
    def address(self) -> str:
        """The server's address as a URL: ``grpc://host:port`` or ``grpcs://host:port``."""
        return f"{'grpcs' if self._credentials else 'grpc'}://{self.target}"

    def _new_job(self, info: JobInfo, owned: bool = True, trust: bool = False) -> Any:
        """Wrap a job record in the client's job type and start watching it.

        ``owned`` jobs (submitted by this client) release a streamed result
        once they have read it; their pickles are loaded, as are those of
        jobs attached with ``trust``.
        """
        raise NotImplementedError

    def _new_jobs(self, infos: list[JobInfo]) -> list[Any]:
        """Wrap a batch of new job records in the client's job type; watch them together."""
        raise NotImplementedError

    def _describe(self, info: ClusterInfo | None) -> str:
        name = type(self).__name__
        if info is None:
            return f"<{name}: '{self.address}' not connected>"
        return (
            f"<{name}: '{self.address}' workers={info.n_workers} "
            f"threads={info.total_threads}, memory={info.total_memory / 2**30:.2f} GiB>"
        )

    def info(self) -> Op[ClusterInfo]:
        """Describe the cluster and the server.

        Returns:
            Workers, threads, memory, dashboard link, the server's software
            versions and the schedulers jobs may name.
        """
        response = yield Call("GetClusterInfo", pb.GetClusterInfoRequest())
        info = _convert.cluster_info(response.cluster, response)
        self._server_versions = info.versions
        self._cluster = info
        self._caller = info.caller
        return info

    def _caller_name(self) -> Op[str]:
        """The name the server knows this client by (asked once per client)."""
        if self._caller is None:
            response = yield Call("GetClusterInfo", pb.GetClusterInfoRequest())
            self._server_versions = _convert.versions(response.versions)
            self._caller = response.caller
        return self._caller

    def functions(self) -> Op[list[FunctionInfo]]:
        """List the named functions the service offers, sorted by name."""
        response = yield Call("ListFunctions", pb.ListFunctionsRequest())
        return [_convert.function_info(f) for f in response.functions]

    def _check_versions(self) -> Op[None]:
        # Asked once per client, before the first pickled work is sent.
        if self._versions_ok:
            return
        if self._server_versions is None:
            response = yield Call("GetClusterInfo", pb.GetClusterInfoRequest())
            self._server_versions = _convert.versions(response.versions)
            self._caller = response.caller
        _versions.check(_versions.local_versions(), self._server_versions, self.check_versions)
        self._versions_ok = True
