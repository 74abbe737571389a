"""Assembling and running the gRPC server: services, health, reflection, lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import faulthandler
import functools
import gc
import logging
import os
import signal
from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from client_sdk._proto.compute.v1 import compute_pb2 as pb
from client_sdk._proto.compute.v1 import compute_pb2_grpc as pb_grpc
from server import telemetry, tls
from server.auth import AuthConfigError, Authenticator
from server.builtins import builtins
from server.config import Settings
from server.core import ComputeCore
from server.interceptors import CallerInterceptor
from server.registry import Registry, default_registry, load_modules
from server.servicer import ComputeServicer
from server.tracing import OFF, Tracing

logger = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ComputeService"].full_name

#: Seconds that answers to cancelled calls get to go out after the grace period.
RESPONSE_FLUSH_GRACE = 2.0

#: Past the shutdown grace, how many seconds closing may take before the process
#: writes every thread's stack to stderr and exits with status 1: a close that
#: hangs (a connection that never answers) must not keep a stopped server up.
SHUTDOWN_WATCHDOG = 15.0

#: The health status that says whether the server's own cluster has all its
#: workers (NOT_SERVING while lost ones are coming back; the service still serves).
CLUSTER_SIZE_HEALTH = "dask-compute.cluster-size"

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def build_registry(settings: Settings) -> Registry:
    """The built-ins plus the functions of ``settings.functions`` and entry points.

    Raises:
        RuntimeError: A module or entry point could not be loaded.
    """
    registry = Registry()
    registry.update(builtins)
    try:
        load_modules(settings.functions)
    except Exception as exc:  # an operator's module: say which one, not a traceback
        raise RuntimeError(f"cannot load named functions: {type(exc).__name__}: {exc}") from exc
    registry.update(default_registry)
    return registry


def server_options(settings: Settings) -> list[tuple[str, Any]]:
    """Channel arguments of the server: message limits and keepalive policy."""
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        # Let clients keep idle connections alive with pings every 10 s or more.
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
    ]


def build_server(
    settings: Settings,
    core: ComputeCore,
    authenticator: Authenticator | None = None,
    tracing: Tracing = OFF,
) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """Create the server with every service, bound to ``settings.host:port``.

    Args:
        settings: The server's settings (address, limits, TLS).
        core: What the servicer calls.
        authenticator: Who the callers are; built from ``settings`` when
            ``None`` (see :meth:`Authenticator.from_settings`).
        tracing: When on, a server span per RPC (:mod:`server.telemetry`),
            around everything else the call meets; give the core the same.

    Returns:
        The (not yet started) server, the port it bound (useful with port 0),
        and its health servicer.

    Raises:
        RuntimeError: The address could not be bound, or the credentials or
            TLS files cannot be used (:class:`AuthConfigError`,
            :class:`server.tls.TLSConfigError`).
    """
    if authenticator is None:
        authenticator = Authenticator.from_settings(settings)
    credentials = tls.server_credentials(settings)
    servicer = ComputeServicer(core)
    server = grpc.aio.server(
        options=server_options(settings),
        interceptors=[
            *telemetry.server_interceptors(tracing),
            CallerInterceptor(
                authenticator, servicer.answers, max_argument_bytes=settings.max_argument_bytes
            ),
        ],
    )
    pb_grpc.add_ComputeServiceServicer_to_server(servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    address = f"{host}:{settings.port}"
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError as exc:
        raise RuntimeError(f"cannot listen on {address}: {exc}") from exc
    if port == 0:
        raise RuntimeError(f"cannot listen on {address}")
    return server, port, health_servicer


async def set_service_serving(health_servicer: health.aio.HealthServicer, serving: bool) -> None:
    """Set the health of compute.v1.ComputeService only."""
    await health_servicer.set(SERVICE_NAME, SERVING if serving else NOT_SERVING)


async def set_size_health(health_servicer: health.aio.HealthServicer, full: bool) -> None:
    """Set :data:`CLUSTER_SIZE_HEALTH`: whether the server's own cluster has all its workers."""
    await health_servicer.set(CLUSTER_SIZE_HEALTH, SERVING if full else NOT_SERVING)


async def set_serving(health_servicer: health.aio.HealthServicer, serving: bool) -> None:
    """Set the overall and the ComputeService health status."""
    status = SERVING if serving else NOT_SERVING
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, status)


def _reload_tokens(authenticator: Authenticator) -> None:
    """SIGHUP: put the tokens file's current content in force; jobs keep running."""
    try:
        summary = authenticator.reload()
    except AuthConfigError as exc:
        logger.error("SIGHUP: tokens not reloaded, the previous ones stay in force: %s", exc)
        return
    logger.info("SIGHUP: tokens reloaded: auth=%s", summary)


#: Allocations (net) between two young-generation garbage collections; Python's default is 700.
GC_YOUNG_THRESHOLD = 10_000


def _tune_gc() -> None:
    """Collect garbage less often, and never scan what start-up made.

    The server process holds the Dask scheduler's task states and every
    job's record and handles, and its calls allocate many short-lived
    objects: with Python's defaults, collections took about 15% of its CPU
    in a 10,000-call ``map`` (7 s in 3 runs, 26 of them full). With these,
    1.8 s and none full, and 15% more calls per second. ``gc.freeze()``
    moves what exists now (modules, the cluster) out of every collection.
    """
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


@dataclasses.dataclass
class Service:
    """A started service: its core, its gRPC server, the port it listens on, its health."""

    core: ComputeCore
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    functions: int

    async def shut_down(self, grace: float) -> None:
        """Health NOT_SERVING, new jobs refused (UNAVAILABLE), ``grace`` seconds for
        running jobs, then what is left is cancelled and recorded, so callers blocked
        in Run or WaitJob get the cancelled record rather than a dropped connection."""
        await self.health.enter_graceful_shutdown()
        self.core.drain()
        await self.core.wait_idle(grace)
        self.core.cancel_all("the server shut down")


@contextlib.asynccontextmanager
async def running(
    settings: Settings, authenticator: Authenticator, tracing: Tracing | None = None
) -> AsyncIterator[Service]:
    """The service started: the cluster first (so no request meets a half-made
    cluster), then the gRPC server; on exit the server stops, then the core closes.

    ``tracing`` defaults to what ``settings`` and the ``OTEL_*`` variables ask
    for (:func:`server.telemetry.tracing_from`), whose queued spans are
    exported on exit; one given is the caller's to shut down.

    Raises:
        RuntimeError: Named functions, the address, the TLS files or the trace
            exporter cannot be used.
    """
    registry = build_registry(settings)
    own = tracing is None
    if tracing is None:
        tracing = telemetry.tracing_from(settings, os.environ)
    try:
        async with _serving(settings, authenticator, registry, tracing) as service:
            yield service
    finally:
        if own:
            await asyncio.to_thread(tracing.shutdown)


@contextlib.asynccontextmanager
async def _serving(
    settings: Settings, authenticator: Authenticator, registry: Registry, tracing: Tracing
) -> AsyncIterator[Service]:
    core = ComputeCore(settings, registry, callers=authenticator.caller_named, tracing=tracing)
    await core.start()
    try:
        server, port, health_servicer = build_server(settings, core, authenticator, tracing)
        await set_serving(health_servicer, True)
        # The service's health follows the Dask scheduler (NOT_SERVING while it is
        # unreachable: readiness); the overall status "" stays SERVING while the
        # process is fine (liveness), so an outage does not get replicas restarted.
        core.on_cluster_health = functools.partial(set_service_serving, health_servicer)
        await health_servicer.set(CLUSTER_SIZE_HEALTH, SERVING)
        core.cluster.on_size = functools.partial(set_size_health, health_servicer)
        await server.start()
        try:
            yield Service(core, server, port, health_servicer, len(registry))
        finally:
            await server.stop(RESPONSE_FLUSH_GRACE)
    finally:
        await core.close()


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run the service until ``stop`` is set or SIGINT/SIGTERM arrives.

    The access policy is logged in one line; SIGHUP reloads the tokens file.
    On SIGINT/SIGTERM the service shuts down as :meth:`Service.shut_down`
    says, with ``settings.shutdown_grace``; then the client and cluster close.
    """
    # The policy (credentials, safe defaults, TLS files) is checked before
    # the cluster starts, so a refusal costs nothing and says one line.
    authenticator = Authenticator.from_settings(settings)
    tls.server_credentials(settings)
    async with running(settings, authenticator) as service:
        metrics_server = None
        if settings.metrics_port:
            try:
                metrics_server = service.core.metrics.serve(settings.host, settings.metrics_port)
            except OSError as exc:
                message = f"cannot serve metrics on port {settings.metrics_port}: {exc}"
                raise RuntimeError(message) from exc
        _tune_gc()
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        # Installed before the "serving" line: SIGHUP's default action kills.
        loop.add_signal_handler(signal.SIGHUP, _reload_tokens, authenticator)
        logger.info(
            "policy: auth=%s tls=%s pickled-work=%s bind=%s:%d",
            authenticator.describe(),
            tls.describe(settings),
            authenticator.pickled_work(),
            settings.host,
            service.port,
        )
        logger.info(
            "serving compute.v1.ComputeService on %s:%d (%d functions)",
            settings.host,
            service.port,
            service.functions,
        )
        try:
            await stop.wait()
            logger.info("shutting down: running jobs get %gs to finish", settings.shutdown_grace)
            faulthandler.dump_traceback_later(
                settings.shutdown_grace + SHUTDOWN_WATCHDOG, exit=True
            )
            await service.shut_down(settings.shutdown_grace)
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                loop.remove_signal_handler(signum)
            if metrics_server is not None:
                metrics_server.shutdown()
    faulthandler.cancel_dump_traceback_later()
    logger.info("stopped")
