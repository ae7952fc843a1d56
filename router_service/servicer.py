"""The RouterService RPCs: thin wrappers over the engine, with gRPC errors."""

from __future__ import annotations

import grpc

from routing_api.router.v1 import router_pb2, router_pb2_grpc

from .engine import RouteEngine
from .errors import InvalidRequest, grpc_errors

__all__ = ["RouterServicer"]


class RouterServicer(router_pb2_grpc.RouterServiceServicer):
    def __init__(self, engine: RouteEngine, max_batch: int) -> None:
        self._engine = engine
        self._max_batch = max_batch
        self.metrics = engine.metrics  # grpc_errors counts errors here

    @grpc_errors
    async def Route(self, request: router_pb2.RouteRequest, context: grpc.aio.ServicerContext) -> router_pb2.RouteResponse:
        plan = self._engine.policy.plan(request)
        (response,) = await self._engine.route_plans([plan], context.time_remaining())
        return response

    @grpc_errors
    async def RouteBatch(
        self, request: router_pb2.RouteBatchRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.RouteBatchResponse:
        if not request.requests:
            raise InvalidRequest("requests is empty")
        if len(request.requests) > self._max_batch:
            raise InvalidRequest(
                f"{len(request.requests)} requests in one batch, more than limits.max_batch={self._max_batch}"
            )
        plans = []
        for i, item in enumerate(request.requests):
            try:
                plans.append(self._engine.policy.plan(item))
            except InvalidRequest as exc:
                raise InvalidRequest(f"requests[{i}]: {exc}") from None
        responses = await self._engine.route_plans(plans, context.time_remaining())
        return router_pb2.RouteBatchResponse(responses=responses)

    @grpc_errors
    async def Describe(
        self, request: router_pb2.DescribeRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.DescribeResponse:
        return self._engine.describe()
