"""Build, run and stop the gateway: HTTP (uvicorn) and gRPC servers in one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import math
import socket
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from routing_api.gateway.v1 import gateway_pb2
from service_core.auth import api_key
from service_core.callers import Callers
from service_core.errors import ConfigError
from service_core.grpc_server import GrpcServer, build_grpc_server, cannot_listen, wait_for_signal
from service_core.heap import freeze_startup_heap
from service_core.quota import Counters
from service_core.tls import http_ssl_options
from service_core.tracing import grpc_client_interceptors, grpc_server_interceptors, tracer_provider

from .accounting.capture import Capture
from .accounting.policy import Caller
from .apis.app import build_http_app
from .apis.frontdoor import FrontDoor
from .apis.grpc import GatewayServicer
from .config import GatewaySettings, metrics_token, secrets_of
from .core.chat import ChatService
from .http_protocol import timed_protocol
from .metrics import GatewayMetrics
from .routing.router_client import RouterClient
from .upstreams import open_upstream

__all__ = ["SERVICE_NAME", "GatewayApp", "build_gateway", "serve"]

logger = logging.getLogger(__name__)

SERVICE = gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"]
SERVICE_NAME = SERVICE.full_name
CUT_S = 2.0  # after the grace, how long cut requests have to send their last event


@dataclass
class GatewayApp:
    """A started gateway; ports are the ones actually bound (tests pass 0)."""

    http_port: int
    grpc: GrpcServer
    chat: ChatService
    router: RouterClient
    settings: GatewaySettings
    http_server: uvicorn.Server
    http_task: asyncio.Task[None]
    resources: AsyncExitStack
    door: FrontDoor
    draining: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def grpc_port(self) -> int:
        return self.grpc.port

    async def stop(self) -> None:
        """Fail readiness and health first, let in-flight requests finish within the grace, end the rest
        with a last error event each (never a torn stream), then close clients."""
        server = self.settings.server
        self.draining.set()
        await self.grpc.drain(server.shutdown_delay_s)
        self.http_server.should_exit = True
        # Both servers stop taking requests now; their own deadlines come after ours, so the cut is the gateway's.
        stopping = asyncio.gather(self.grpc.stop(server.grace_s + CUT_S), self.http_task)
        if not await self.door.settle(server.grace_s):
            cut = self.door.cut()
            logger.warning("shutdown grace (server.grace_s=%gs) over: ending %d requests with an error", server.grace_s, cut)
            await self.door.settle(CUT_S)
        await stopping
        await self.resources.aclose()


class _HttpServer(uvicorn.Server):
    """uvicorn without its own signal handlers: serve() owns SIGTERM and SIGINT for both servers."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def _listen(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must say TCP: asyncio sets TCP_NODELAY on accepted connections only then, and
    # without it Nagle holds each small SSE event until the client's delayed ACK (~40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:  # worker processes share the port; the kernel spreads connections over them
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"{cannot_listen(f'{host}:{port}', 'HTTP', 'server.http_port (GATEWAY_SERVER__HTTP_PORT)')} ({exc.strerror})") from exc
    sock.listen(2048)
    sock.setblocking(False)
    return sock


async def _start_http(app: Any, sock: socket.socket, settings: GatewaySettings) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    config = uvicorn.Config(
        app, lifespan="off", log_level="warning", access_log=False, timeout_keep_alive=30,
        http=timed_protocol(settings.server.header_timeout_s, settings.server.body_timeout_s),
        limit_concurrency=settings.server.max_connections,
        timeout_graceful_shutdown=math.ceil(settings.server.grace_s + CUT_S + 1),  # after the gateway's own cut
        **http_ssl_options(settings.server, "server"),
    )
    server = _HttpServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="gateway-http")
    while not server.started:
        if task.done():
            task.result()
            raise ConfigError("the HTTP server stopped during start-up")
        await asyncio.sleep(0.01)
    return server, task


async def build_gateway(
    settings: GatewaySettings, tracing: Any | None = None, *, reuse_port: bool = False, workers: int = 1
) -> GatewayApp:
    """Start both listeners; nothing is connected to at import time.

    ``tracing``: an OpenTelemetry TracerProvider (tests); default: from settings.tracing.
    ``reuse_port``: this process is one of several workers sharing the ports; ``workers``: how many share
    its limits."""
    stack = AsyncExitStack()
    try:
        provider = tracing or tracer_provider(settings.tracing, "gateway")
        if provider is not None and tracing is None:
            stack.callback(provider.shutdown)
        metrics = GatewayMetrics()
        upstreams = {
            u.name: open_upstream(u, provider, secrets_of(settings), metrics, settings.limits.max_upstream_answer_bytes)
            for u in settings.upstreams
        }
        for upstream in upstreams.values():
            stack.push_async_callback(upstream.aclose)
            upstream.start()
        router = RouterClient(settings.router, grpc_client_interceptors(provider))
        stack.push_async_callback(router.aclose)
        callers = Callers(settings.callers, settings.auth.resolve_keys())
        counters = Counters(settings.redis, on_state=lambda up: metrics.redis_up.set(int(up)))
        stack.push_async_callback(counters.aclose)
        capture = Capture(settings.capture)
        stack.callback(capture.close)  # LIFO: after the streams have drained
        chat = ChatService(
            settings, router, upstreams, metrics, keys_checked=callers.required, capture=capture, workers=workers,
            counters=counters,
        )
        chat.spend.start()
        stack.push_async_callback(chat.spend.aclose)  # after the streams: their spend is sent to Redis

        def identify(token: str | None) -> Caller | None:
            identity = callers.identify(token)
            return chat.policies.caller(identity) if identity is not None else None

        door = FrontDoor(metrics, identify, settings.server.grace_s)  # auth of both APIs: its access line too
        grpc_server = build_grpc_server(
            SERVICE, GatewayServicer(chat, door), host=settings.server.grpc_host or settings.server.host,
            port=settings.server.grpc_port,
            tls=settings.server, port_setting="server.grpc_port (GATEWAY_SERVER__GRPC_PORT)", interceptors=grpc_server_interceptors(provider),
            reuse_port=reuse_port,
        )
        draining = asyncio.Event()
        sock = _listen(settings.server.host, settings.server.http_port, reuse_port)
        stack.callback(sock.close)
        token = metrics_token(settings.server)
        closed = token is not None or bool(settings.callers)  # it names every caller and its spend: theirs to read

        def may_scrape(authorization: str | None) -> bool:
            if not closed:
                return True
            given = api_key(authorization)
            if given is not None and token is not None and hmac.compare_digest(given.encode(), token.encode()):
                return True
            caller = identify(given) if given is not None else None
            return caller is not None and caller.admin

        http_app: Any = build_http_app(chat, door, ready=lambda: not draining.is_set(), may_scrape=may_scrape)
        if provider is not None:
            from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

            http_app = OpenTelemetryMiddleware(http_app, tracer_provider=provider)
        http_server, http_task = await _start_http(http_app, sock, settings)
        await grpc_server.start()
        served = {model for u in settings.upstreams for model in u.models}
        check = asyncio.create_task(router.check_models(served), name="gateway-router-check")
        stack.push_async_callback(_cancel, check)
        lag = asyncio.create_task(_watch_loop(chat.metrics), name="gateway-loop-lag")
        stack.push_async_callback(_cancel, lag)
    except BaseException:
        await stack.aclose()
        raise
    http_port = sock.getsockname()[1]
    return GatewayApp(http_port, grpc_server, chat, router, settings, http_server, http_task, stack, door, draining)


async def serve(
    settings: GatewaySettings, *, reuse_port: bool = False, workers: int = 1, heartbeat: Callable[[], None] | None = None
) -> None:
    """Run until SIGTERM or SIGINT, then drain and exit. Under ``serve --workers``: ``workers`` share the
    limits, and ``heartbeat`` is called each second from the event loop (the parent's watch for a hang)."""
    app = await build_gateway(settings, reuse_port=reuse_port, workers=workers)
    freeze_startup_heap()
    pulse = asyncio.create_task(_beat(heartbeat), name="gateway-heartbeat") if heartbeat is not None else None
    host = settings.server.host
    logger.info(
        "gateway serving OpenAI HTTP on http://%s:%d/v1 and gRPC %s on %s:%d; router at %s",
        host, app.http_port, SERVICE_NAME, settings.server.grpc_host or host, app.grpc_port, settings.router.address,
    )
    await wait_for_signal()
    logger.info("shutting down: not ready, draining streams for up to %gs", settings.server.grace_s)
    await app.stop()
    if pulse is not None:
        await _cancel(pulse)
    logger.info("gateway stopped")


async def _watch_loop(metrics: GatewayMetrics, every_s: float = 0.05) -> None:
    """How late the loop wakes a timer (gateway_event_loop_lag_seconds): what a blocking call costs every request."""
    loop = asyncio.get_running_loop()
    while True:
        asked = loop.time()
        await asyncio.sleep(every_s)
        metrics.loop_lag.observe(max(loop.time() - asked - every_s, 0.0))


async def _beat(heartbeat: Callable[[], None]) -> None:
    while True:
        heartbeat()
        await asyncio.sleep(1.0)
