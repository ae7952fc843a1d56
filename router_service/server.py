"""Build, run and stop the router: the engine, gRPC server, health and reflection."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from prometheus_client import start_http_server

from routing_api.router.v1 import router_pb2
from service_core.auth import BearerTokenInterceptor
from service_core.grpc_server import GrpcServer, build_grpc_server, wait_for_signal
from service_core.heap import freeze_startup_heap
from service_core.settings import GrpcClientSettings
from service_core.tracing import grpc_server_interceptors, tracer_provider

from .callers import RouterCallers
from .config import RouterSettings
from .engine import RouteEngine, open_engine
from .errors import ConfigError, RouterError
from .servicer import RouterAdminServicer, RouterServicer

__all__ = ["SERVICE_NAME", "RouterApp", "build_router", "reload_on_hangup", "serve"]

logger = logging.getLogger(__name__)

SERVICE = router_pb2.DESCRIPTOR.services_by_name["RouterService"]
SERVICE_NAME = SERVICE.full_name
ADMIN = router_pb2.DESCRIPTOR.services_by_name["RouterAdmin"]


@dataclass
class RouterApp:
    """A started router. ``port`` is the one actually bound (tests pass port 0)."""

    grpc: GrpcServer
    engine: RouteEngine
    settings: RouterSettings
    resources: AsyncExitStack
    metrics_port: int | None = None

    @property
    def port(self) -> int:
        return self.grpc.port

    async def stop(self) -> None:
        """Fail health checks first, let in-flight calls finish, then close resources."""
        await self.grpc.drain(self.settings.server.shutdown_delay_s)
        await self.grpc.stop(self.settings.server.grace_s)
        await self.resources.aclose()


async def build_router(settings: RouterSettings, tracing: Any | None = None) -> RouterApp:
    """Start a router on settings.server.host:port (port 0: a free one).

    ``tracing``: an OpenTelemetry TracerProvider (tests); default: from settings.tracing."""
    stack = AsyncExitStack()
    try:
        engine = await stack.enter_async_context(open_engine(settings))
        limit = settings.limits.max_message_bytes
        tokens = (*settings.auth.resolve_tokens("auth"), *(k for c in settings.callers for k in c.resolve_keys()))
        admin_tokens = settings.auth.resolve_admin_tokens("auth")
        callers = RouterCallers(settings, engine.counters, engine.metrics)
        provider = tracing or tracer_provider(settings.tracing, "router")
        if provider is not None and tracing is None:
            stack.callback(provider.shutdown)
        interceptors = grpc_server_interceptors(provider)
        if tokens:
            interceptors.append(BearerTokenInterceptor(tokens, SERVICE_NAME, "auth.token / auth.token_env / callers"))
        if admin_tokens:
            interceptors.append(
                BearerTokenInterceptor(admin_tokens, ADMIN.full_name, "auth.admin_token / auth.admin_token_env")
            )
        server = build_grpc_server(
            SERVICE,
            RouterServicer(engine, settings.limits.max_batch, callers),
            host=settings.server.host,
            port=settings.server.port,
            tls=settings.server,
            port_setting="the router's server.port (ROUTER_SERVER__PORT; under gateway-service up, its --router-config)",
            interceptors=interceptors,
            options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)],
            maximum_concurrent_rpcs=settings.limits.max_concurrent_rpcs,
            more_services=[(ADMIN, RouterAdminServicer(engine))],
        )
        metrics_port = None
        if settings.server.metrics_port is not None:
            metrics_server, _ = start_http_server(
                settings.server.metrics_port, addr=settings.server.host, registry=engine.metrics.registry
            )
            stack.callback(metrics_server.server_close)  # LIFO: runs after shutdown()
            stack.callback(metrics_server.shutdown)
            metrics_port = metrics_server.server_port
        await server.start()
    except BaseException:
        await stack.aclose()
        raise
    return RouterApp(server, engine, settings, stack, metrics_port)


async def _route_sample(app: RouterApp, prompt: str) -> None:
    """Route ``prompt`` through the listener just opened (in-process when it speaks TLS)."""
    from .client import decision_dict, route_remote
    from .domain import RouteQuery

    settings = app.settings
    query = RouteQuery(prompt=prompt)
    if settings.server.tls_cert is not None:
        (decision,) = await app.engine.route([query])
        logger.info("sample prompt routed in-process (the listener speaks TLS): %s", json.dumps(decision_dict(decision)))
        return
    host = "127.0.0.1" if settings.server.host in ("0.0.0.0", "::", "") else settings.server.host
    client = GrpcClientSettings(
        address=f"{host}:{app.port}", token=settings.auth.token, token_env=settings.auth.token_env
    )
    logger.info("sample prompt routed over gRPC: %s", json.dumps(await route_remote(client, query)))


async def reload_on_hangup(app: RouterApp, reread: Callable[[], RouterSettings]) -> None:
    """SIGHUP: take the config file's [[scorers]] again; other changed sections need a restart."""
    logger.info("SIGHUP: reloading the scorers from the configuration")
    try:
        fresh = reread()
    except (ConfigError, ValueError) as exc:
        logger.warning("SIGHUP: the configuration does not load, nothing changed: %s", exc)
        return
    ignored = [name for name in type(fresh).model_fields if name != "scorers" and getattr(fresh, name) != getattr(app.settings, name)]
    if ignored:
        logger.warning("SIGHUP: changes to %s take a restart; only [[scorers]] reload", ", ".join(ignored))
    try:
        await app.engine.reload(scorers=fresh.scorers)
    except RouterError:
        return  # logged by the engine, with the reason


async def serve(
    settings: RouterSettings, *, sample: str | None = None, reread: Callable[[], RouterSettings] | None = None
) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully. At SIGHUP, reload the scorers
    from ``reread()`` (the config file and environment, read again)."""
    app = await build_router(settings)
    freeze_startup_heap()
    logger.info(
        "router serving %s on %s:%d (embedder %s, scorers %s)",
        SERVICE_NAME, settings.server.host, app.port, settings.embedder.backend, [s.name for s in settings.scorers],
    )
    if sample:
        await _route_sample(app, sample)
    await wait_for_signal(on_hangup=None if reread is None else lambda: reload_on_hangup(app, reread))
    logger.info("shutting down: health NOT_SERVING, draining calls for up to %gs", settings.server.grace_s)
    await app.stop()
    logger.info("router stopped")
