"""Anthropic's Messages API on the gateway: ``POST /v1/messages`` (streamed or whole) and
``POST /v1/messages/count_tokens``, so Claude Code and the official ``anthropic`` SDK work unchanged
(``ANTHROPIC_BASE_URL=http://gateway:8000``), routed like any chat request.

Keys come as ``x-api-key`` (or Bearer); ``anthropic-version`` and ``anthropic-beta`` are accepted
whatever they say. Refusals are Anthropic's error JSON with its status codes and a ``request-id``
header; an error after the stream began is an ``error`` event.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..core.chat import ChatService
from ..core.exchange import Exchange
from ..domain import RouteDecision
from ..errors import GatewayError
from .anthropic_wire import MessagesRequest, MessagesWriter, check_shape, error_body, whole_message
from .body import read_model
from .chat_api import Answer, ParsedChat, serve_chat
from .headers import route_headers

__all__ = ["AnthropicApi", "AnthropicCodec"]


class AnthropicCodec:
    """Anthropic's wire: errors in its shape (a refusal, or the last event of a stream), answers as it writes them."""

    media_type = "text/event-stream"

    def refusal(self, error: GatewayError, x: Exchange) -> Response:
        headers = x.id_headers() | {"request-id": x.request_id}
        if error.route is not None:
            headers |= route_headers(error.route)
        if error.retry_after:
            headers["retry-after"] = error.retry_after
        status = 529 if error.http_status == 503 else error.http_status
        return JSONResponse(error_body(str(error), status, x.request_id), status, headers)

    def writer(self, parsed: ParsedChat, route: RouteDecision, x: Exchange) -> MessagesWriter:
        return MessagesWriter(parsed, route, x)

    def whole(self, parsed: ParsedChat, route: RouteDecision, x: Exchange, answer: Answer) -> dict[str, object]:
        return whole_message(parsed, route, x, answer)


class AnthropicApi:
    def __init__(self, chat: ChatService) -> None:
        self._chat = chat
        self._codec = AnthropicCodec()

    async def messages(self, request: Request, x: Exchange) -> Response:
        body = await read_model(request, MessagesRequest, self._chat.limits, check_shape)
        x.requested = body.model
        response = await serve_chat(self._chat, self._codec, body.parsed(), x)
        response.headers["request-id"] = x.request_id
        return response

    async def count_tokens(self, request: Request, x: Exchange) -> Response:
        """An estimate (4 characters a token over messages, system and tools): no model is asked."""
        raw = await read_model(request, _CountRequest, self._chat.limits, check_shape)
        x.requested = raw.model
        tokens = self._chat.count_tokens(raw.model, raw.params())
        return JSONResponse({"input_tokens": tokens}, headers=x.id_headers() | {"request-id": x.request_id})


class _CountRequest(MessagesRequest):
    """count_tokens takes a Messages request without max_tokens."""

    max_tokens: int = 1
