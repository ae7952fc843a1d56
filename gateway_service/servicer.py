"""gateway.v1.GatewayService: the same chat core as HTTP, over gRPC (gateway_pb2 stays here)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message as Message_

from routing_api.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from service_core.auth import bearer_token
from service_core.grpc_handlers import Context, MalformedRequest
from service_core.request_ids import accept_request_id

from .chat import ChatService
from .domain import ChatParams, Delta, Message, RouteDecision
from .errors import GatewayError, InvalidRequest, internal_error
from .grpc_status import grpc_status
from .stream import ChatStream, log_refusal

__all__ = ["GatewayServicer"]

logger = logging.getLogger(__name__)


def _route_info(route: RouteDecision) -> gateway_pb2.RouteInfo:
    return gateway_pb2.RouteInfo(
        model=route.model, routed=route.routed, score=route.score, threshold=route.threshold,
        degraded=route.degraded, fallback=route.fallback, reason=route.reason, budget_limited=route.budget_limited,
        rerouted_for=route.rerouted_for,
    )


def _plain(value: Any) -> Any:
    """A Struct's contents as JSON values: protobuf keeps every number as a double, so whole numbers are made
    ints again (a JSON schema's "maxItems": 3 must not reach the upstream as 3.0)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _struct(message: Message_) -> Any:
    return _plain(json_format.MessageToDict(message))


def _message(m: gateway_pb2.ChatMessage) -> tuple[Message, dict[str, Any]]:
    """The text the router and the limits see, and the message as an OpenAI-compatible upstream takes it."""
    raw: dict[str, Any] = {"role": m.role, "content": m.content}
    text = m.content
    if m.parts:
        raw["content"] = [_struct(part) for part in m.parts]
        text = "".join(str(part.get("text") or "") for part in raw["content"] if part.get("type") == "text")
    if m.tool_calls:
        raw["tool_calls"] = [_struct(call) for call in m.tool_calls]
    if m.tool_call_id:
        raw["tool_call_id"] = m.tool_call_id
    if m.name:
        raw["name"] = m.name
    return Message(m.role, text), raw


def _params(request: gateway_pb2.ChatRequest) -> ChatParams:
    messages = [_message(m) for m in request.messages]
    extra: dict[str, Any] = _struct(request.extra) if request.HasField("extra") else {}
    if request.tools:
        extra["tools"] = [_struct(tool) for tool in request.tools]
    if request.HasField("tool_choice"):
        extra["tool_choice"] = _struct(request.tool_choice)
    if request.HasField("response_format"):
        extra["response_format"] = _struct(request.response_format)
    return ChatParams(
        messages=tuple(text for text, _ in messages),
        temperature=request.temperature if request.HasField("temperature") else None,
        top_p=request.top_p if request.HasField("top_p") else None,
        max_tokens=request.max_tokens if request.HasField("max_tokens") else None,
        stop=tuple(request.stop),
        seed=request.seed if request.HasField("seed") else None,
        raw_messages=tuple(raw for _, raw in messages),
        extra=extra,
    )


def _delta(chunk_id: str, model: str, delta: Delta) -> gateway_pb2.ChatChunk:
    chunk = gateway_pb2.ChatChunk(id=chunk_id, delta=delta.text, model=model, reasoning=delta.reasoning)
    for call in delta.tool_calls:
        chunk.tool_calls.add().update(call)
    return chunk


class GatewayServicer(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(self, chat: ChatService) -> None:
        self._chat = chat

    async def Chat(
        self, request: gateway_pb2.ChatRequest | MalformedRequest, context: Context
    ) -> AsyncIterator[gateway_pb2.ChatChunk]:
        metadata = dict(context.invocation_metadata() or ())
        given = metadata.get("x-request-id")
        request_id, _ = accept_request_id(given if isinstance(given, str) else None)
        started = time.perf_counter()
        stream: ChatStream | None = None  # once opened, the stream writes the access line itself
        try:
            if isinstance(request, MalformedRequest):
                raise InvalidRequest(request.message)
            authorization = metadata.get("authorization")
            client_key = bearer_token(authorization if isinstance(authorization, str) else None)
            stream = await self._chat.open(request.model, _params(request), request_id, client_key)
            self._chat.metrics.requests.labels(api="grpc", outcome="started").inc()
            chunk_id = f"chatcmpl-{request_id}"
            model = stream.route.model
            async with stream:
                async for event in stream.events():
                    if isinstance(event, Delta):
                        yield _delta(chunk_id, model, event)
                    else:
                        usage = event.usage  # unset when the upstream reported none: unknown, not 0
                        yield gateway_pb2.ChatChunk(
                            id=chunk_id,
                            model=model,
                            finish_reason=event.reason,
                            usage=gateway_pb2.Usage(
                                prompt_tokens=usage.prompt_tokens,
                                completion_tokens=usage.completion_tokens,
                                total_tokens=usage.total_tokens,
                            ) if usage else None,
                            route=_route_info(stream.route),
                        )
        except GatewayError as exc:
            self._chat.metrics.requests.labels(api="grpc", outcome=type(exc).__name__).inc()
            if stream is None:
                requested = getattr(request, "model", "")
                log_refusal("grpc", request_id, requested, grpc_status(exc).name, type(exc).__name__, str(exc), started)
            # Before the first chunk this is the call's status; after it, a terminal status
            # ends the stream: the client sees the error, never a fake final chunk.
            await context.abort(grpc_status(exc), str(exc))
        except Exception:  # noqa: BLE001 - any bug: INTERNAL with an id that is also in the log
            message = internal_error(logger, f"request {request_id}")
            if stream is None:
                log_refusal("grpc", request_id, getattr(request, "model", ""), "INTERNAL", "internal_error", message, started)
            await context.abort(grpc.StatusCode.INTERNAL, message)

    async def ListModels(
        self, request: gateway_pb2.ListModelsRequest, context: Context
    ) -> gateway_pb2.ListModelsResponse:
        return gateway_pb2.ListModelsResponse(
            models=[gateway_pb2.ModelInfo(id=i, owned_by=o, description=d) for i, o, d in self._chat.models()]
        )
