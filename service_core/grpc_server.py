"""A gRPC server as both services run one: servicer, health, reflection, TLS, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from .errors import ConfigError
from .grpc_handlers import add_servicer
from .settings import TlsServerSettings
from .tls import server_credentials

__all__ = ["GrpcServer", "build_grpc_server", "cannot_listen", "wait_for_signal"]

HEALTH_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


@dataclass
class GrpcServer:
    """A bound, not yet started server. ``port`` is the one actually bound (tests pass port 0)."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    service_name: str

    async def start(self) -> None:
        await self.server.start()
        for service in ("", self.service_name):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)

    async def drain(self, delay_s: float) -> None:
        """Health NOT_SERVING first, so load balancers stop sending, then ``delay_s`` for them to notice."""
        await self.health.enter_graceful_shutdown()
        if delay_s:
            await asyncio.sleep(delay_s)

    async def stop(self, grace_s: float) -> None:
        """Refuse new calls; in-flight ones may finish within ``grace_s``."""
        await self.server.stop(grace_s)


def cannot_listen(address: str, what: str, port_setting: str) -> str:
    """Why a listener could not start, pointing at the likely cause (gRPC's own text only says "Failed to bind")."""
    return (
        f"cannot listen on {address} for {what}: the port is taken (is another instance of this service running?) "
        f"or the address is not one of this machine's; change {port_setting} or server.host"
    )


def build_grpc_server(
    service: ServiceDescriptor,
    servicer: object,
    *,
    host: str,
    port: int,
    tls: TlsServerSettings,
    port_setting: str,
    interceptors: Sequence[Any] = (),
    options: Sequence[tuple[str, Any]] = (),
    maximum_concurrent_rpcs: int | None = None,
    reuse_port: bool = False,
    more_services: Sequence[tuple[ServiceDescriptor, object]] = (),
) -> GrpcServer:
    """Register ``servicer`` (and ``more_services``), health and reflection, and bind ``host:port``
    (port 0: a free one). Health reports ``service``.

    ``reuse_port``: share the port with this service's other worker processes (SO_REUSEPORT)."""
    # grpc shares a port with another process by default (SO_REUSEPORT): a second router on
    # the same port would start and split the traffic. Refuse instead, unless the workers share it on purpose.
    server = grpc.aio.server(
        options=[("grpc.so_reuseport", int(reuse_port)), *options],
        interceptors=list(interceptors),
        maximum_concurrent_rpcs=maximum_concurrent_rpcs,  # past it: RESOURCE_EXHAUSTED at once
    )
    add_servicer(server, servicer, service)
    for extra, extra_servicer in more_services:
        add_servicer(server, extra_servicer, extra)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = (service.full_name, *(extra.full_name for extra, _ in more_services), HEALTH_NAME, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(names, server)
    address = f"{host}:{port}"
    credentials = server_credentials(tls, "server")
    try:
        bound = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    except RuntimeError as exc:
        raise ConfigError(cannot_listen(address, "gRPC", port_setting)) from exc
    return GrpcServer(server, bound, health_servicer, service.full_name)


async def wait_for_signal(on_hangup: Callable[[], Coroutine[Any, Any, None]] | None = None) -> None:
    """Return at the first SIGTERM or SIGINT. The handlers stay: a second signal while
    draining must not kill the process (as the default action would) and cut the streams.
    ``on_hangup``: run at each SIGHUP (reload), one at a time, until the stop signal."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    hangups: set[asyncio.Task[None]] = set()
    if on_hangup is not None:
        def hangup() -> None:
            task = loop.create_task(on_hangup())
            hangups.add(task)
            task.add_done_callback(hangups.discard)

        loop.add_signal_handler(signal.SIGHUP, hangup)
    try:
        await stop.wait()
    finally:
        if on_hangup is not None:
            loop.remove_signal_handler(signal.SIGHUP)
        await asyncio.gather(*hangups, return_exceptions=True)
