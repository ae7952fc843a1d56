"""Calling a gRPC service: one channel with TLS and a bearer token, health checks, and the CLI flags for them."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .auth import bearer_metadata
from .settings import GrpcClientSettings
from .tls import channel_credentials

__all__ = ["add_client_arguments", "call_metadata", "check_health", "client_from_args", "health_command", "open_channel"]


def open_channel(
    client: GrpcClientSettings, setting: str, *, options: Sequence[tuple[str, Any]] = (), interceptors: Any = None
) -> grpc.aio.Channel:
    """A channel to ``client.address``: TLS when ``tls_ca`` is set, plaintext otherwise.

    ``setting``: the config section errors name; empty for command-line flags (``--tls-ca``)."""
    opts = list(options)
    credentials = channel_credentials(client, setting)
    if credentials is None:
        return grpc.aio.insecure_channel(client.address, options=opts, interceptors=interceptors)
    if client.tls_server_name:
        opts.append(("grpc.ssl_target_name_override", client.tls_server_name))
    return grpc.aio.secure_channel(client.address, credentials, options=opts, interceptors=interceptors)


def call_metadata(client: GrpcClientSettings) -> tuple[tuple[str, str], ...]:
    return bearer_metadata(client.resolve_token())


async def check_health(client: GrpcClientSettings, service: str = "") -> str:
    """The gRPC health status of ``service`` (SERVING, NOT_SERVING, or the call's error)."""
    async with open_channel(client, "") as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=client.timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            return f"{exc.code().name}: {exc.details()}"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def health_command(client: GrpcClientSettings) -> int:
    """``health`` for container checks: print the status, exit 0 only when SERVING."""
    status = asyncio.run(check_health(client))
    print(f"{client.address}: {status}")
    return 0 if status == "SERVING" else 1


def add_client_arguments(parser: argparse.ArgumentParser) -> None:
    """``--tls-ca`` / ``--tls-cert`` / ``--tls-key`` / ``--tls-server-name`` / ``--token-env`` for a command that calls a server."""
    group = parser.add_argument_group("calling a server over TLS or with a token")
    group.add_argument("--tls-ca", type=Path, help="PEM CA of the server's certificate: call it over TLS")
    group.add_argument("--tls-cert", type=Path, help="PEM client certificate, for a server that requires mTLS")
    group.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    group.add_argument("--tls-server-name", help="the name in the server's certificate, if not the address")
    group.add_argument("--token-env", help="name of the env variable holding the server's bearer token")


def client_from_args(address: str, args: argparse.Namespace, timeout_s: float = 10.0) -> GrpcClientSettings:
    return GrpcClientSettings(
        address=address,
        timeout_s=timeout_s,
        token_env=args.token_env,
        tls_ca=args.tls_ca,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_server_name=args.tls_server_name,
    )
