"""``router-service route``: one decision, from a running router or in-process."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict

from routing_api.router.v1 import router_pb2, router_pb2_grpc

from .config import RouterSettings
from .engine import open_engine
from .errors import RouterError

__all__ = ["check_health", "health_command", "route_once", "route_remote"]


def _request(args: argparse.Namespace) -> router_pb2.RouteRequest:
    request = router_pb2.RouteRequest(prompt=args.prompt, scorer=args.scorer)
    if args.threshold is not None:
        request.threshold = args.threshold
    elif args.strong_share is not None:
        request.strong_share = args.strong_share
    return request


def _as_dict(response: router_pb2.RouteResponse) -> dict[str, Any]:
    return MessageToDict(response, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


async def route_remote(address: str, request: router_pb2.RouteRequest, timeout: float = 10.0) -> dict[str, Any]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        try:
            response = await stub.Route(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise RouterError(f"router at {address} answered {exc.code().name}: {exc.details()}") from None
    return _as_dict(response)


async def route_once(settings: RouterSettings, args: argparse.Namespace) -> dict[str, Any]:
    request = _request(args)
    if args.address:
        return await route_remote(args.address, request)
    async with open_engine(settings) as engine:
        (response,) = await engine.route([request])
    return _as_dict(response)


async def check_health(address: str, service: str = "", timeout: float = 3.0) -> str:
    """The gRPC health status of ``service`` at ``address`` (SERVING, NOT_SERVING, ...)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with grpc.aio.insecure_channel(address) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.aio.AioRpcError as exc:
            return f"{exc.code().name}: {exc.details()}"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def health_command(address: str) -> int:
    """``health`` for container checks: print the status, exit 0 only when SERVING."""
    status = asyncio.run(check_health(address))
    print(f"{address}: {status}")
    return 0 if status == "SERVING" else 1
