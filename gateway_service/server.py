"""Build, run and stop the gateway: HTTP (uvicorn) and gRPC servers in one event loop."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import ssl
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import grpc
import uvicorn
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from router_service.auth import BearerTokenInterceptor
from router_service.config import server_credentials
from router_service.tracing import grpc_client_interceptors, grpc_server_interceptors, tracer_provider
from router_service.errors import ConfigError, add_servicer
from routing_api.gateway.v1 import gateway_pb2

from .chat import ChatService
from .config import GatewaySettings
from .http_api import build_http_app
from .router_client import RouterClient
from .servicer import GatewayServicer
from .upstreams import open_upstream

__all__ = ["GatewayApp", "SERVICE_NAME", "build_gateway", "serve"]

logger = logging.getLogger(__name__)

SERVICE = gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"]
SERVICE_NAME = SERVICE.full_name


@dataclass
class GatewayApp:
    """A started gateway; ports are the ones actually bound (tests pass 0)."""

    http_port: int
    grpc_port: int
    chat: ChatService
    router: RouterClient
    settings: GatewaySettings
    grpc_server: grpc.aio.Server
    health: health.aio.HealthServicer
    http_server: uvicorn.Server
    http_task: asyncio.Task[None]
    resources: AsyncExitStack
    draining: asyncio.Event = field(default_factory=asyncio.Event)

    async def stop(self) -> None:
        """Fail readiness and health first, drain in-flight streams, then close clients."""
        self.draining.set()
        await self.health.enter_graceful_shutdown()
        if self.settings.server.shutdown_delay_s:
            await asyncio.sleep(self.settings.server.shutdown_delay_s)
        self.http_server.should_exit = True
        await asyncio.gather(self.grpc_server.stop(self.settings.server.grace_s), self.http_task)
        await self.resources.aclose()


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must say TCP: asyncio sets TCP_NODELAY on accepted connections only then, and
    # without it Nagle holds each small SSE event until the client's delayed ACK (~40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} for HTTP ({exc}): change server.http_port or server.host") from exc
    sock.listen(2048)
    sock.setblocking(False)
    return sock


async def build_gateway(settings: GatewaySettings, tracing: Any | None = None) -> GatewayApp:
    """Start both listeners; nothing is connected to at import time.

    ``tracing``: an OpenTelemetry TracerProvider (tests); default: from settings.tracing."""
    stack = AsyncExitStack()
    try:
        provider = tracing or tracer_provider(settings.tracing, "gateway")
        if provider is not None and tracing is None:
            stack.callback(provider.shutdown)
        upstreams = {u.name: open_upstream(u, provider) for u in settings.upstreams}
        for upstream in upstreams.values():
            stack.push_async_callback(upstream.aclose)
        router = RouterClient(settings.router, grpc_client_interceptors(provider))
        stack.push_async_callback(router.aclose)
        keys = settings.auth.resolve_keys()
        chat = ChatService(settings, router, upstreams, keys_checked=bool(keys))
        interceptors = [BearerTokenInterceptor(keys, SERVICE_NAME, "auth.api_keys / auth.api_keys_file")] if keys else []

        grpc_server = grpc.aio.server(interceptors=[*grpc_server_interceptors(provider), *interceptors])
        add_servicer(grpc_server, GatewayServicer(chat), SERVICE)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, grpc_server)
        health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
        reflection.enable_server_reflection((SERVICE_NAME, health_name, reflection.SERVICE_NAME), grpc_server)
        address = f"{settings.server.host}:{settings.server.grpc_port}"
        credentials = server_credentials(settings.server, "server")
        try:
            if credentials is None:
                grpc_port = grpc_server.add_insecure_port(address)
            else:
                grpc_port = grpc_server.add_secure_port(address, credentials)
        except RuntimeError as exc:
            raise ConfigError(f"cannot listen on {address} for gRPC ({exc}): change server.grpc_port") from exc

        draining = asyncio.Event()
        sock = _listen(settings.server.host, settings.server.http_port)
        stack.callback(sock.close)
        http_app: Any = build_http_app(chat, ready=lambda: not draining.is_set(), keys=keys)
        if provider is not None:
            from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

            http_app = OpenTelemetryMiddleware(http_app, tracer_provider=provider)
        tls: dict[str, object] = {}
        if credentials is not None:
            tls = {"ssl_certfile": str(settings.server.tls_cert), "ssl_keyfile": str(settings.server.tls_key)}
            if settings.server.tls_client_ca is not None:
                tls |= {"ssl_ca_certs": str(settings.server.tls_client_ca), "ssl_cert_reqs": ssl.CERT_REQUIRED}
        config = uvicorn.Config(
            http_app, lifespan="off", log_level="warning", access_log=False,
            timeout_graceful_shutdown=settings.server.grace_s, timeout_keep_alive=30, **tls,  # type: ignore[arg-type]
        )
        http_server = uvicorn.Server(config)
        http_server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # serve() owns signals
        http_task = asyncio.create_task(http_server.serve(sockets=[sock]), name="gateway-http")
        while not http_server.started:
            if http_task.done():
                http_task.result()
                raise ConfigError("the HTTP server stopped during start-up")
            await asyncio.sleep(0.01)
        await grpc_server.start()
        for service in ("", SERVICE_NAME):
            await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    except BaseException:
        await stack.aclose()
        raise
    http_port = sock.getsockname()[1]
    return GatewayApp(
        http_port, grpc_port, chat, router, settings, grpc_server, health_servicer, http_server, http_task, stack, draining
    )


async def wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def serve(settings: GatewaySettings) -> None:
    """Run until SIGTERM or SIGINT, then drain and exit."""
    app = await build_gateway(settings)
    host = settings.server.host
    logger.info(
        "gateway serving OpenAI HTTP on http://%s:%d/v1 and gRPC %s on %s:%d; router at %s",
        host, app.http_port, SERVICE_NAME, host, app.grpc_port, settings.router.address,
    )
    await wait_for_signal()
    logger.info("shutting down: not ready, draining streams for up to %gs", settings.server.grace_s)
    await app.stop()
    logger.info("gateway stopped")
