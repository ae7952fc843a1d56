"""Bearer tokens, parsed and checked in one place: HTTP headers and gRPC metadata alike.

Health and reflection stay open (load balancers and grpcurl use them); every
method of the protected gRPC service needs ``authorization: Bearer <token>``
metadata. Tokens are compared in constant time and never logged.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TypeVar

import grpc

__all__ = ["BearerTokenInterceptor", "api_key", "bearer_matches", "bearer_metadata", "bearer_token"]

PREFIX = "Bearer "

Request = TypeVar("Request")
Response = TypeVar("Response")


def bearer_token(header: str | None) -> str | None:
    """The token of an ``authorization: Bearer <token>`` header or metadata value; None otherwise."""
    if not header or not header.startswith(PREFIX):
        return None
    return header[len(PREFIX) :]


def api_key(header: str | None) -> str | None:
    """The key of an HTTP ``authorization`` header: a Bearer token, or the password of Basic auth (what a
    browser sends for a page such as the gateway's /ui, and then for the page's own requests)."""
    token = bearer_token(header)
    if token is not None or not header or not header.startswith("Basic "):
        return token
    try:
        decoded = base64.b64decode(header[len("Basic ") :], validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    _, colon, password = decoded.partition(":")
    return password if colon and password else None


def bearer_matches(header: str | None, tokens: Iterable[str]) -> bool:
    """True when ``header`` is ``Bearer <t>`` for one of ``tokens``."""
    given = bearer_token(header)
    if given is None:
        return False
    return any(hmac.compare_digest(given.encode(), token.encode()) for token in tokens)


def bearer_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """gRPC call metadata that presents ``token``; empty without one."""
    return (("authorization", f"{PREFIX}{token}"),) if token else ()


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls to ``service`` without a matching token, with UNAUTHENTICATED naming ``setting``."""

    def __init__(self, tokens: Iterable[str], service: str, setting: str) -> None:
        self._tokens = tuple(tokens)
        self._prefix = f"/{service}/"
        self._message = f"missing or wrong token: send 'authorization: Bearer <token>' metadata (see {setting})"

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Request, Response] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Request, Response] | None:
        handler = await continuation(handler_call_details)
        if not handler_call_details.method.startswith(self._prefix):
            return handler
        metadata = dict(handler_call_details.invocation_metadata or ())
        header = metadata.get("authorization")
        if bearer_matches(header if isinstance(header, str) else None, self._tokens):
            return handler
        message = self._message

        if handler is not None and handler.response_streaming:

            async def refuse_stream(
                request: Request, context: grpc.aio.ServicerContext[Request, Response]
            ) -> AsyncIterator[Response]:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
                yield  # pragma: no cover - makes this an async generator

            return grpc.unary_stream_rpc_method_handler(
                refuse_stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )

        async def refuse(request: Request, context: grpc.aio.ServicerContext[Request, Response]) -> Response:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

        return grpc.unary_unary_rpc_method_handler(
            refuse,
            request_deserializer=handler.request_deserializer if handler else None,
            response_serializer=handler.response_serializer if handler else None,
        )
