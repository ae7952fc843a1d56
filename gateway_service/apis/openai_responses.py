"""OpenAI's Responses API on the gateway: ``POST /v1/responses``, streamed or whole, so Codex (whose only wire
API it is), the ``openai`` SDK's ``responses`` and the OpenAI Agents SDK work unchanged, routed like any chat.

Stateless, as Codex uses it (``store: false``, the whole conversation in ``input``), or with stored conversations
(``previous_response_id``) where ``[redis]`` is set: kept per caller, fleet-wide, for ``conversations.ttl_s``.
Refusals are OpenAI's error JSON (the chat API's codec), a failure after the stream began ``response.failed``.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from ..core.chat import ChatService
from ..core.exchange import Exchange
from ..domain import RouteDecision
from .body import read_model
from .chat_api import Answer, ParsedChat, serve_chat
from .openai_responses_wire import ResponsesRequest, ResponsesWriter, check_shape, output_items, whole_response

__all__ = ["ResponsesApi"]


class _ResponsesCodec:
    media_type = "text/event-stream"

    def writer(self, parsed: ParsedChat, route: RouteDecision, x: Exchange) -> ResponsesWriter:
        return ResponsesWriter(parsed, route, x)

    def whole(self, parsed: ParsedChat, route: RouteDecision, x: Exchange, answer: Answer) -> dict[str, Any]:
        return whole_response(parsed, route, x, answer)


class ResponsesApi:
    def __init__(self, chat: ChatService) -> None:
        self._chat = chat
        self._codec = _ResponsesCodec()

    async def create(self, request: Request, x: Exchange) -> Response:
        body = await read_model(request, ResponsesRequest, self._chat.limits, check_shape)
        x.requested = body.model
        store = self._chat.conversations
        history: list[dict[str, Any]] = []
        if body.previous_response_id:
            history = orjson.loads(await store.load(x.caller.name, body.previous_response_id, "previous_response_id"))
        stored = body.store is not False and store.enabled  # OpenAI stores unless told not to
        parsed = body.parsed(history, f"resp_{uuid.uuid4().hex}", stored)
        if stored:
            caller, response_id, items = x.caller.name, parsed.context.response_id, [*history, *body.items()]

            async def keep(answer: Answer) -> None:
                await store.save(caller, response_id, orjson.dumps([*items, *output_items(answer)]))

            parsed = replace(parsed, kept=keep)
        return await serve_chat(self._chat, self._codec, parsed, x)
