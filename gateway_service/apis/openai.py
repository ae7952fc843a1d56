"""OpenAI's API on the gateway: /v1/chat/completions (SSE or JSON), /v1/embeddings, /v1/models; and beside it
the routing decision alone (/v1/route), what the router serves (/v1/router) and spend (/v1/spend).

The official ``openai`` SDK works against it unchanged. The routing decision is in the answer's
``model`` field and in ``x-route-*`` headers. Refusals are OpenAI's error JSON; an error after
the first token is an SSE error event and the stream ends without ``data: [DONE]``, so no client
mistakes it for success. Request ids, auth, access lines and the catch-all are the front door's.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..core.chat import ChatService
from ..core.embeddings import as_base64
from ..core.exchange import Exchange
from ..domain import Delta, Finish, RouteDecision, RoutingStatus
from ..errors import GatewayError, PolicyDenied
from .body import read_model
from .chat_api import Answer, ParsedChat, serve_chat
from .headers import route_headers
from .openai_wire import (
    ChatCompletionRequest,
    ChunkWriter,
    RouteOnlyRequest,
    check_shape,
    error_body,
    message_body,
    sse,
    usage,
)

__all__ = ["OpenAIApi", "OpenAICodec"]


class OpenAICodec:
    """A refusal as OpenAI's error JSON, with how the model was chosen when routing had happened."""

    def refusal(self, error: GatewayError, x: Exchange) -> Response:
        headers = x.id_headers() | (route_headers(error.route) if error.route is not None else {})
        if error.retry_after:
            headers["retry-after"] = error.retry_after
        return JSONResponse(error_body(str(error), error.error_type, error.code), error.http_status, headers)


class _CompletionChunks:
    """A chat-completions stream. Events that are ready together go out in one write (one syscall, one packet):
    the role chunk with the first event (already in hand once the stream is open), the finish with usage and
    [DONE]; an error after the first token is a last error event, and no [DONE]."""

    def __init__(self, route: RouteDecision, x: Exchange, include_usage: bool) -> None:
        self._base = {"id": f"chatcmpl-{x.request_id}", "object": "chat.completion.chunk", "created": int(time.time()),
                      "model": route.model}
        self._include_usage = include_usage
        self._writer = ChunkWriter(self._base, include_usage)
        self._opening = self._writer.chunk({"role": "assistant", "content": ""})

    def _opened(self) -> bytes:
        opening, self._opening = self._opening, b""
        return opening

    def event(self, event: Delta | Finish) -> bytes:
        if isinstance(event, Delta):
            return self._opened() + self._writer.delta(event)
        end = self._writer.chunk({}, event.reason)
        if self._include_usage:
            end += sse({**self._base, "choices": [], "usage": usage(event)})
        return self._opened() + end + b"data: [DONE]\n\n"

    def failed(self, error: GatewayError) -> bytes:
        return self._opened() + sse(error_body(str(error), error.error_type, error.code))


class _CompletionsCodec:
    media_type = "text/event-stream"

    def writer(self, parsed: ParsedChat, route: RouteDecision, x: Exchange) -> _CompletionChunks:
        return _CompletionChunks(route, x, bool(parsed.context))

    def whole(self, parsed: ParsedChat, route: RouteDecision, x: Exchange, answer: Answer) -> dict[str, Any]:
        assert answer.finish is not None
        message = message_body("".join(answer.text), "".join(answer.reasoning), answer.tool_calls)
        return {
            "id": f"chatcmpl-{x.request_id}", "object": "chat.completion", "created": int(time.time()), "model": route.model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": answer.finish.reason}],
            "usage": usage(answer.finish),
        }


_COMPLETIONS = _CompletionsCodec()


class _EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # passed on to OpenAI-compatible upstreams

    model: str
    input: Any
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None


def _no_shape(body: Any, limits: object) -> None:
    """Embeddings inputs are counted by the embedding service (at most 2048)."""


class OpenAIApi:
    def __init__(self, chat: ChatService) -> None:
        self._chat = chat

    async def completions(self, request: Request, x: Exchange) -> Response:
        body = await read_model(request, ChatCompletionRequest, self._chat.limits, check_shape)
        x.requested = body.model
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return await serve_chat(self._chat, _COMPLETIONS, ParsedChat(body.model, body.params(), body.stream, include_usage), x)

    async def embeddings(self, request: Request, x: Exchange) -> Response:
        """``POST /v1/embeddings``, answered by the upstream that serves the model."""
        body = await read_model(request, _EmbeddingRequest, self._chat.limits, _no_shape)
        x.requested = body.model
        options = {k: v for k, v in body.model_dump(exclude={"model", "input", "encoding_format"}).items() if v is not None}
        embedded = await self._chat.embeddings.embed(body.model, body.input, options)
        encode = as_base64 if body.encoding_format == "base64" else (lambda vector: vector)
        answer: dict[str, Any] = {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(embedded.vectors)],
            "model": body.model,
        }
        if embedded.prompt_tokens is not None:  # unknown is left out, never 0
            answer["usage"] = {"prompt_tokens": embedded.prompt_tokens, "total_tokens": embedded.prompt_tokens}
        return JSONResponse(answer, headers=x.id_headers())

    async def route(self, request: Request, x: Exchange) -> Response:
        """``POST /v1/route``: a chat request's body (model and messages; tools and the rest are read for
        capabilities) -> the model that would answer and why, without calling any LLM."""
        body = await read_model(request, RouteOnlyRequest, self._chat.limits, check_shape)
        x.requested = body.model
        decision = await self._chat.route(body.model, body.params(), x, scorer=body.scorer, preview=body.preview)
        scored = bool(decision.scorer)  # a rule or a concrete model decided without the scorer: no score to show
        return JSONResponse({
            "model": decision.model, "routed": decision.routed, "routed_strong": decision.strong,
            "score": decision.score if scored else None, "threshold": decision.threshold if scored else None,
            "reason": decision.reason, "rule": decision.rule or None,
            "degraded": decision.degraded, "budget_limited": decision.budget_limited,
            "rerouted_for": decision.rerouted_for or None, "scorer": decision.scorer or None,
            "scorer_version": decision.scorer_version or None,
        }, headers=x.id_headers() | route_headers(decision))

    async def status(self, request: Request, x: Exchange) -> Response:
        """``GET /v1/router``: what the router serves (scorers, calibrated and live thresholds, shadow figures), the
        caller's policy and its recent strong share, and for admin callers the upstream hosts (the routing page)."""
        return JSONResponse(status_json(await self._chat.status(x)), headers=x.id_headers())

    async def spend(self, request: Request, x: Exchange) -> Response:
        """``GET /v1/spend``: requests, strong share, spend, all-strong baseline and savings per caller (and per
        day and model); fleet-wide with Redis. For callers with ``admin = true`` (anyone, without keys)."""
        if not x.caller.admin:
            raise PolicyDenied(f"caller {x.caller.name!r} may not read spend: give it admin = true in [[callers]]")
        return JSONResponse(await self._chat.spend.report(), headers=x.id_headers())

    async def models(self, request: Request, x: Exchange) -> Response:
        """OpenAI's model list; Anthropic's shape for a request that carries ``anthropic-version`` (its SDK's)."""
        if "anthropic-version" in request.headers:
            listed = [{"type": "model", "id": i, "display_name": d or i, "created_at": "2026-01-01T00:00:00Z"}
                      for i, _, d in self._chat.models()]
            return JSONResponse({"data": listed, "has_more": False, "first_id": listed[0]["id"] if listed else None,
                                 "last_id": listed[-1]["id"] if listed else None}, headers=x.id_headers())
        data = [{"id": i, "object": "model", "created": 0, "owned_by": owner} for i, owner, _ in self._chat.models()]
        return JSONResponse({"object": "list", "data": data}, headers=x.id_headers())


def status_json(status: RoutingStatus) -> dict[str, Any]:
    """GET /v1/router's body; NaN (a shadow's correlation below 2 samples) is null, as JSON has no NaN."""
    body: dict[str, Any] = _finite(dataclasses.asdict(status))
    for name, recent in (("recent_caller", status.recent_caller), ("recent_all", status.recent_all)):
        body[name]["strong_share"] = recent.strong_share
    return body


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
