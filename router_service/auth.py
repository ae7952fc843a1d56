"""Bearer-token checks for gRPC services: one interceptor, shared by router and gateway.

Health and reflection stay open (load balancers and grpcurl use them); every
method of the protected service needs ``authorization: Bearer <token>``
metadata. Tokens are compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Iterable

import grpc

__all__ = ["BearerTokenInterceptor", "bearer_matches"]


def bearer_matches(header: str | None, tokens: Iterable[str]) -> bool:
    """True when ``header`` is ``Bearer <t>`` for one of ``tokens``."""
    if not header or not header.startswith("Bearer "):
        return False
    given = header[len("Bearer ") :].encode()
    return any(hmac.compare_digest(given, token.encode()) for token in tokens)


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, tokens: Iterable[str], service: str, setting: str) -> None:
        self._tokens = tuple(tokens)
        self._prefix = f"/{service}/"
        self._setting = setting

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if not handler_call_details.method.startswith(self._prefix):
            return handler
        metadata = dict(handler_call_details.invocation_metadata or ())
        if bearer_matches(metadata.get("authorization"), self._tokens):
            return handler
        message = f"missing or wrong token: send 'authorization: Bearer <token>' metadata (see {self._setting})"

        async def refuse(request: object, context: grpc.aio.ServicerContext) -> None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

        if handler is not None and handler.response_streaming:
            async def refuse_stream(request: object, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
                yield  # pragma: no cover - makes this an async generator

            return grpc.unary_stream_rpc_method_handler(
                refuse_stream, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return grpc.unary_unary_rpc_method_handler(
            refuse,
            request_deserializer=handler.request_deserializer if handler else None,
            response_serializer=handler.response_serializer if handler else None,
        )
