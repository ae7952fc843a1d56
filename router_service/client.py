"""``router-service route``: one decision, from a running router (TLS and token as configured) or in-process."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

import grpc

from routing_api.router.v1 import router_pb2, router_pb2_grpc
from service_core.grpc_client import call_metadata, client_from_args, open_channel
from service_core.settings import GrpcClientSettings

from .config import RouterSettings
from .domain import Decision, RouteQuery
from .engine import open_engine
from .errors import RouterError
from .proto import query_to_pb

__all__ = ["decision_dict", "reload_remote", "route_once", "route_remote"]


def _query(args: argparse.Namespace) -> RouteQuery:
    return RouteQuery(
        prompt=args.prompt,
        scorer=args.scorer,
        threshold=args.threshold,
        strong_share=args.strong_share if args.threshold is None else None,
    )


def decision_dict(decision: Decision) -> dict[str, Any]:
    """A decision as JSON-ready fields (the same names as the proto's RouteResponse), as a reader should see it."""
    return readable(dataclasses.asdict(decision))


def readable(fields: dict[str, Any]) -> dict[str, Any]:
    """A decision for people (``router-service route``): a rule's decision says so instead of showing the
    proto's zero score and empty scorer; no rule is null, not ""."""
    if fields.get("rule") and not fields.get("scorer_name"):
        fields.update(score=None, scorer_name=None, scorer_version=None,
                      decided_by=f"rule {fields['rule']!r}: not scored")
    if not fields.get("rule"):
        fields["rule"] = None
    return fields


async def route_remote(client: GrpcClientSettings, query: RouteQuery) -> dict[str, Any]:
    """Ask the router at ``client.address``; a failed call is a RouterError naming the address and status."""
    from google.protobuf.json_format import MessageToDict

    async with open_channel(client, "") as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        try:
            response = await stub.Route(query_to_pb(query), timeout=client.timeout_s, metadata=call_metadata(client))
        except grpc.aio.AioRpcError as exc:
            raise RouterError(call_failed(client.address, exc)) from None
    return readable(MessageToDict(response, preserving_proto_field_name=True, always_print_fields_with_no_presence=True))


def call_failed(address: str, exc: grpc.aio.AioRpcError) -> str:
    """What a failed call means, in words that point the right way (issue #27)."""
    code, details = exc.code(), exc.details() or ""
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return (f"{address} serves another gRPC service, not the router's (the gateway's port? the router listens on "
                "its server.port, 50051 by default): check --address")
    if code == grpc.StatusCode.UNAVAILABLE and ("connect" in details.lower() or "refused" in details.lower()):
        return f"nothing answered at {address} (is the router running there? check --address): {details}"
    return f"router at {address} answered {code.name}: {details}"


async def route_once(settings: RouterSettings, args: argparse.Namespace) -> dict[str, Any]:
    query = _query(args)
    if args.address:
        return await route_remote(client_from_args(args.address, args), query)
    async with open_engine(settings) as engine:
        (decision,) = await engine.route([query])
    return decision_dict(decision)


async def reload_remote(client: GrpcClientSettings, paths: dict[str, str]) -> dict[str, Any]:
    """RouterAdmin.ReloadScorers at ``client.address``; a refusal is a RouterError with the router's reason."""
    from google.protobuf.json_format import MessageToDict

    async with open_channel(client, "") as channel:
        stub = router_pb2_grpc.RouterAdminStub(channel)
        try:
            response = await stub.ReloadScorers(
                router_pb2.ReloadScorersRequest(paths=paths), timeout=client.timeout_s, metadata=call_metadata(client)
            )
        except grpc.aio.AioRpcError as exc:
            raise RouterError(call_failed(client.address, exc)) from None
    return MessageToDict(response, preserving_proto_field_name=True)
