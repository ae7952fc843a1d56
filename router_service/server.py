"""Build, run and stop the router: the engine, gRPC server, health and reflection."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from routing_api.router.v1 import router_pb2

from .auth import BearerTokenInterceptor
from .config import RouterSettings, server_credentials
from .tracing import grpc_server_interceptors, tracer_provider
from .engine import RouteEngine, open_engine
from .errors import ConfigError, add_servicer
from .servicer import RouterServicer

__all__ = ["SERVICE_NAME", "RouterApp", "build_router", "serve"]

logger = logging.getLogger(__name__)

SERVICE_NAME = router_pb2.DESCRIPTOR.services_by_name["RouterService"].full_name
HEALTH_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


@dataclass
class RouterApp:
    """A started router. ``port`` is the one actually bound (tests pass port 0)."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    engine: RouteEngine
    settings: RouterSettings
    resources: AsyncExitStack
    metrics_port: int | None = None

    async def stop(self) -> None:
        """Fail health checks first, let in-flight calls finish, then close resources."""
        await self.health.enter_graceful_shutdown()
        if self.settings.server.shutdown_delay_s:
            await asyncio.sleep(self.settings.server.shutdown_delay_s)
        await self.server.stop(self.settings.server.grace_s)
        await self.resources.aclose()


async def build_router(settings: RouterSettings, tracing: Any | None = None) -> RouterApp:
    """Start a router on settings.server.host:port (port 0: a free one).

    ``tracing``: an OpenTelemetry TracerProvider (tests); default: from settings.tracing."""
    stack = AsyncExitStack()
    try:
        engine = await stack.enter_async_context(open_engine(settings))
        limit = settings.limits.max_message_bytes
        tokens = settings.auth.resolve_tokens("auth")
        provider = tracing or tracer_provider(settings.tracing, "router")
        if provider is not None and tracing is None:
            stack.callback(provider.shutdown)
        interceptors = grpc_server_interceptors(provider)
        if tokens:
            interceptors.append(BearerTokenInterceptor(tokens, SERVICE_NAME, "auth.token / auth.token_env"))
        server = grpc.aio.server(
            options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)],
            interceptors=interceptors,
        )
        add_servicer(server, RouterServicer(engine, settings.limits.max_batch), router_pb2.DESCRIPTOR.services_by_name["RouterService"])
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection((SERVICE_NAME, HEALTH_NAME, reflection.SERVICE_NAME), server)
        address = f"{settings.server.host}:{settings.server.port}"
        credentials = server_credentials(settings.server, "server")
        try:
            port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
        except RuntimeError as exc:
            raise ConfigError(f"cannot listen on {address} ({exc}): change server.port or server.host") from exc
        metrics_port = None
        if settings.server.metrics_port is not None:
            metrics_server, _ = start_http_server(
                settings.server.metrics_port, addr=settings.server.host, registry=engine.metrics.registry
            )
            stack.callback(metrics_server.server_close)  # LIFO: runs after shutdown()
            stack.callback(metrics_server.shutdown)
            metrics_port = metrics_server.server_port
        await server.start()
        for service in ("", SERVICE_NAME):
            await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    except BaseException:
        await stack.aclose()
        raise
    return RouterApp(server, port, health_servicer, engine, settings, stack, metrics_port)


async def serve(settings: RouterSettings, *, sample: str | None = None) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    app = await build_router(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    logger.info(
        "router serving %s on %s:%d (embedder %s, scorers %s)",
        SERVICE_NAME, settings.server.host, app.port, settings.embedder.backend, [s.name for s in settings.scorers],
    )
    if sample:
        from .client import route_remote

        host = "127.0.0.1" if settings.server.host in ("0.0.0.0", "::", "") else settings.server.host
        decision = await route_remote(f"{host}:{app.port}", router_pb2.RouteRequest(prompt=sample))
        logger.info("sample prompt routed over gRPC: %s", json.dumps(decision))
    await stop.wait()
    logger.info("shutting down: health NOT_SERVING, draining calls for up to %gs", settings.server.grace_s)
    await app.stop()
    logger.info("router stopped")
