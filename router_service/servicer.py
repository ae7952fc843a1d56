"""The RouterService RPCs: thin wrappers over the engine, with gRPC errors."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from routing_api.router.v1 import router_pb2, router_pb2_grpc
from service_core.grpc_handlers import Context
from service_core.quota import Taken
from service_core.request_ids import accept_request_id

from .callers import RouterCallers
from .domain import Decision, RouteQuery
from .engine import RouteEngine
from .errors import InvalidRequest
from .grpc_status import grpc_errors
from .proto import decision_to_pb, description_to_pb, query_from_pb

__all__ = ["RouterAdminServicer", "RouterServicer"]


# One JSON line per call: the caller's request id (x-request-id metadata), decisions, timings.
access_log = logging.getLogger("router_service.access")


def _access_line(context: Context, caller: str, decisions: list[Decision], preview: bool) -> str:
    metadata = dict(context.invocation_metadata() or ())
    given = metadata.get("x-request-id")
    first = decisions[0]
    record = {
        "request_id": accept_request_id(given if isinstance(given, str) else None)[0],
        "caller": caller,
        "routes": len(decisions),
        "models": [d.model for d in decisions[:8]],
        "score": round(first.score, 4),
        "threshold": round(first.threshold, 4),
        "cached": sum(d.embedding_cached for d in decisions),
        "embed_ms": round(first.timings.embed_ms, 2),
        "score_ms": round(first.timings.score_ms, 2),
        "total_ms": round(first.timings.total_ms, 2),
        **({"preview": True} if preview else {}),
    }
    return json.dumps(record, separators=(",", ":"))


class RouterServicer(router_pb2_grpc.RouterServiceServicer):
    def __init__(self, engine: RouteEngine, max_batch: int, callers: RouterCallers) -> None:
        self._engine = engine
        self._max_batch = max_batch
        self._callers = callers
        self.metrics = engine.metrics  # grpc_errors counts errors here

    async def _route(self, context: Context, queries: list[RouteQuery], indexed: bool) -> list[Decision]:
        """Route as the caller's policy says: its window and share, its limits, its strong budget."""
        identity = self._callers.identify(context)
        admitted: list[tuple[RouteQuery, Taken | None]] = []
        try:
            for query in queries:
                admitted.append(await self._callers.admit(identity, query))
        except BaseException:  # a batch refused part-way: the strong calls its first queries reserved are given back
            for _, reserved in admitted:
                await self._callers.routed(identity, reserved, False)
            raise
        decisions: list[Decision] = []
        try:
            decisions = await self._engine.route([q for q, _ in admitted], context.time_remaining(), indexed=indexed)
        finally:
            strong = [d.routed_strong for d in decisions] or [False] * len(admitted)
            for (query, reserved), routed_strong in zip(admitted, strong, strict=True):  # a preview gives it back
                await self._callers.routed(identity, reserved, routed_strong and not query.preview)
        if access_log.isEnabledFor(logging.INFO):
            access_log.info(_access_line(context, identity.name, decisions, any(q.preview for q in queries)))
        return decisions

    @grpc_errors
    async def Route(
        self, request: router_pb2.RouteRequest, context: Context
    ) -> router_pb2.RouteResponse:
        (decision,) = await self._route(context, [query_from_pb(request)], indexed=False)
        return decision_to_pb(decision)

    @grpc_errors
    async def RouteBatch(
        self, request: router_pb2.RouteBatchRequest, context: Context
    ) -> router_pb2.RouteBatchResponse:
        if not request.requests:
            raise InvalidRequest("requests is empty")
        if len(request.requests) > self._max_batch:
            raise InvalidRequest(
                f"{len(request.requests)} requests in one batch, more than limits.max_batch={self._max_batch}"
            )
        decisions = await self._route(context, [query_from_pb(item) for item in request.requests], indexed=True)
        return router_pb2.RouteBatchResponse(responses=[decision_to_pb(d) for d in decisions])

    @grpc_errors
    async def Describe(
        self, request: router_pb2.DescribeRequest, context: Context
    ) -> router_pb2.DescribeResponse:
        return description_to_pb(self._engine.describe())


class RouterAdminServicer(router_pb2_grpc.RouterAdminServicer):
    def __init__(self, engine: RouteEngine) -> None:
        self._engine = engine
        self.metrics = engine.metrics

    @grpc_errors
    async def ReloadScorers(
        self, request: router_pb2.ReloadScorersRequest, context: Context
    ) -> router_pb2.ReloadScorersResponse:
        for name, path in request.paths.items():
            if not path or "\0" in path or len(path) > 4096:
                raise InvalidRequest(f"paths[{name}]: give a file path (not empty, no NUL, at most 4096 characters)")
        reloaded = await self._engine.reload({name: Path(path) for name, path in request.paths.items()})
        return router_pb2.ReloadScorersResponse(
            serving=description_to_pb(reloaded.description), swapped=reloaded.swapped, warnings=reloaded.warnings
        )
