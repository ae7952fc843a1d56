"""gateway.v1.GatewayService: the same chat core as HTTP, over gRPC (gateway_pb2 stays here).

A request is checked by the same schema as OpenAI's HTTP API (its ``extra`` included: ``n: 5`` or
``temperature: "hot"`` is INVALID_ARGUMENT here too, with the same message), and goes through the
same front door (auth, id, access line, catch-all).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message as Message_

from routing_api.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from service_core.grpc_handlers import Context, MalformedRequest

from ..config import LimitSettings
from ..core.chat import ChatService
from ..domain import ChatParams, Delta, RouteDecision
from ..errors import InvalidRequest, TooLarge
from ..toolcalls import wire_fragment
from .body import validated
from .frontdoor import FrontDoor, grpc_exchange
from .openai_wire import ChatCompletionRequest, check_shape

__all__ = ["GatewayServicer"]


def _route_info(route: RouteDecision) -> gateway_pb2.RouteInfo:
    return gateway_pb2.RouteInfo(
        model=route.model, routed=route.routed, score=route.score, threshold=route.threshold,
        degraded=route.degraded, fallback=route.fallback, reason=route.reason, budget_limited=route.budget_limited,
        rerouted_for=route.rerouted_for, rule=route.rule,
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


def _message(m: gateway_pb2.ChatMessage) -> dict[str, Any]:
    """The message as OpenAI's API carries it."""
    raw: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.parts:
        raw["content"] = [_struct(part) for part in m.parts]
    if m.tool_calls:
        raw["tool_calls"] = [_struct(call) for call in m.tool_calls]
    if m.tool_call_id:
        raw["tool_call_id"] = m.tool_call_id
    if m.name:
        raw["name"] = m.name
    return raw


def _params(request: gateway_pb2.ChatRequest, limits: LimitSettings) -> ChatParams:
    """The request as OpenAI's API would carry it, checked by the same schema and limits."""
    fields = len(request.extra.fields) if request.HasField("extra") else 0
    if fields > limits.max_extra_fields:  # counted before the Struct is converted: 280k keys take seconds
        raise InvalidRequest(f"extra has {fields} fields, more than limits.max_extra_fields={limits.max_extra_fields}")
    parts = sum(len(m.parts) for m in request.messages)
    if parts > limits.max_content_parts:
        raise TooLarge(f"{parts} content parts, more than limits.max_content_parts={limits.max_content_parts}")
    body: dict[str, Any] = _struct(request.extra) if request.HasField("extra") else {}
    body.update(model=request.model, messages=[_message(m) for m in request.messages])
    if request.tools:
        body["tools"] = [_struct(tool) for tool in request.tools]
    for name in ("tool_choice", "response_format"):
        if request.HasField(name):
            body[name] = _struct(getattr(request, name))
    for name in ("temperature", "top_p", "max_tokens", "seed"):
        if request.HasField(name):
            body[name] = getattr(request, name)
    if request.stop:
        body["stop"] = list(request.stop)
    return validated(ChatCompletionRequest, body, limits, check_shape).params()


def _delta(chunk_id: str, model: str, delta: Delta) -> gateway_pb2.ChatChunk:
    chunk = gateway_pb2.ChatChunk(id=chunk_id, delta=delta.text, model=model, reasoning=delta.reasoning)
    for call in delta.tool_calls:
        chunk.tool_calls.add().update(wire_fragment(call))
    return chunk


class GatewayServicer(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(self, chat: ChatService, door: FrontDoor) -> None:
        self._chat = chat
        self._door = door

    async def Chat(
        self, request: gateway_pb2.ChatRequest | MalformedRequest, context: Context
    ) -> AsyncIterator[gateway_pb2.ChatChunk]:
        async with grpc_exchange(self._door, context, "grpc/Chat") as x:
            if isinstance(request, MalformedRequest):
                raise InvalidRequest(request.message)
            x.requested = request.model
            stream = await self._chat.open(request.model, _params(request, self._chat.limits), x)
            chunk_id = f"chatcmpl-{x.request_id}"
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

    async def ListModels(
        self, request: gateway_pb2.ListModelsRequest | MalformedRequest, context: Context
    ) -> gateway_pb2.ListModelsResponse:
        async with grpc_exchange(self._door, context, "grpc/ListModels"):
            return gateway_pb2.ListModelsResponse(
                models=[gateway_pb2.ModelInfo(id=i, owned_by=o, description=d) for i, o, d in self._chat.models()]
            )
        raise AssertionError("unreachable: the exchange aborts the call on any error")  # pragma: no cover
