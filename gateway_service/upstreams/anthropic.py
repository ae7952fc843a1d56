"""Anthropic's Messages API as an upstream: ``POST /v1/messages`` with ``stream: true``, so a team can route between
a local Ollama model and a hosted Claude model.

The key goes in ``x-api-key`` (from ``api_key_env``), with ``anthropic-version``. The request is the
domain rendered in Anthropic's shape: system and developer messages as ``system``, tool results as
``tool_result`` blocks in a user message, the assistant's reasoning as ``thinking`` blocks where it is
Anthropic's own (signed), dropped otherwise. The stream's events (``message_start``,
``content_block_*``, ``message_delta``, ``message_stop``, ``error``) become the domain's deltas and one
finish with usage.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

import orjson

from ..domain import (
    ChatParams,
    Delta,
    Embedded,
    Finish,
    Image,
    Message,
    Reasoning,
    Text,
    ToolCall,
    ToolCallDelta,
    ToolResult,
    Usage,
    finish_reason,
)
from ..errors import InvalidRequest, UpstreamError, UpstreamStreamError
from .checks import count, text
from .hosts import Host
from .http import HttpUpstream
from .openai import server_sent_events

__all__ = ["AnthropicUpstream", "anthropic_body"]

VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096  # Anthropic requires max_tokens; a request that set none gets this
MIN_THINKING_BUDGET = 1024  # Anthropic's least budget_tokens


def anthropic_body(model: str, params: ChatParams) -> dict[str, Any]:
    system = [m for m in params.messages if m.role in ("system", "developer")]
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": params.max_tokens or DEFAULT_MAX_TOKENS,
        "messages": _messages([m for m in params.messages if m.role not in ("system", "developer")]),
        "stream": True,
    }
    if system:
        body["system"] = [_text(part) for m in system for part in m.parts if isinstance(part, Text)]
    for key, value in (("temperature", params.temperature), ("top_p", params.top_p), ("top_k", params.top_k)):
        if value is not None:
            body[key] = value
    if params.stop:
        body["stop_sequences"] = list(params.stop)
    if params.tools:
        body["tools"] = [{"name": t.name, "description": t.description, "input_schema": t.parameters} for t in params.tools]
    choice = params.tool_choice
    if choice is not None and params.tools:
        wire: dict[str, Any] = {"type": {"auto": "auto", "none": "none", "required": "any", "tool": "tool"}[choice.mode]}
        if choice.mode == "tool":
            wire["name"] = choice.name
        if choice.parallel is False and choice.mode != "none":
            wire["disable_parallel_tool_use"] = True
        body["tool_choice"] = wire
    config: dict[str, Any] = {}
    reasoning = params.reasoning
    if reasoning is not None:
        if reasoning.enabled or reasoning.budget_tokens:
            budget = max(reasoning.budget_tokens or MIN_THINKING_BUDGET, MIN_THINKING_BUDGET)
            body["thinking"] = {"type": "enabled", "budget_tokens": budget}
            body["max_tokens"] = max(body["max_tokens"], budget + 1)
        if reasoning.effort:
            config["effort"] = reasoning.effort
    if params.output is not None and params.output.schema is not None:
        config["format"] = {"type": "json_schema", "schema": params.output.schema}
    if config:
        body["output_config"] = config
    return body


def _text(part: Text) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "text", "text": part.text}
    if part.cache:
        block["cache_control"] = {"type": "ephemeral"}
    return block


def _image(image: Image) -> dict[str, Any]:
    if image.data:
        return {"type": "image", "source": {"type": "base64", "media_type": image.media_type, "data": image.data}}
    return {"type": "image", "source": {"type": "url", "url": image.url}}


def _blocks(message: Message) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for part in message.parts:
        if isinstance(part, Text):
            if part.text:
                blocks.append(_text(part))
        elif isinstance(part, Image):
            blocks.append(_image(part))
        elif isinstance(part, ToolCall):
            try:
                arguments = json.loads(part.arguments or "{}")
            except json.JSONDecodeError:
                raise InvalidRequest(f"the tool call {part.id!r} has arguments that are not JSON") from None
            blocks.append({"type": "tool_use", "id": part.id, "name": part.name, "input": arguments})
        elif isinstance(part, ToolResult):
            content = [_text(p) if isinstance(p, Text) else _image(p) for p in part.content]
            result: dict[str, Any] = {"type": "tool_result", "tool_use_id": part.call_id, "content": content}
            if part.is_error:
                result["is_error"] = True
            blocks.append(result)
        elif isinstance(part, Reasoning) and part.origin == "anthropic" and message.role == "assistant":
            if part.redacted:
                blocks.append({"type": "redacted_thinking", "data": part.redacted})
            elif part.signature:  # Anthropic refuses thinking it did not sign
                blocks.append({"type": "thinking", "thinking": part.text, "signature": part.signature})
    return blocks


def _messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Alternating user and assistant messages: tool results join the user turn they belong to."""
    out: list[dict[str, Any]] = []
    for message in messages:
        role = "assistant" if message.role == "assistant" else "user"
        blocks = _blocks(message)
        if not blocks:
            continue
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return out


class AnthropicUpstream(HttpUpstream):
    path = "/v1/messages"
    models_path = "/v1/models"

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"x-api-key": key, "anthropic-version": VERSION}

    def request_body(self, model: str, params: ChatParams) -> dict[str, Any]:
        return anthropic_body(model, params)

    def adaptations(self, params: ChatParams) -> tuple[str, ...]:
        notes = [f"dropped: {', '.join(sorted(params.own('openai')))}"] if params.own("openai") else []
        if params.output is not None and params.output.schema is None:
            notes.append("dropped: json output without a schema")
        return tuple(notes)

    def model_names(self, payload: Any) -> list[str]:
        return [entry["id"] for entry in payload["data"]]

    async def embed(self, model: str, inputs: list[str], options: dict[str, Any]) -> Embedded:
        raise UpstreamError(f"upstream {self.name!r} speaks Anthropic's API, which serves no embeddings ({model!r})")

    async def events(self, host: Host, model: str, body: dict[str, Any]) -> AsyncGenerator[Delta | Finish, None]:
        where = self.where(host, model)
        usage = {"input": 0, "output": 0, "cache_read": 0, "cache_write": 0}
        reason, stop_sequence, calls = "", None, 0
        tool_index: dict[int, int] = {}  # content block index -> tool call index
        async with self.post(host, model, body) as response:
            given = response.headers.get("content-type", "")
            if "text/event-stream" not in given:
                raise UpstreamStreamError(f"{where} answered {given or 'without a content type'}, not server-sent events")
            events = server_sent_events(response.content)
            async for event in events:
                try:
                    data = orjson.loads(event.data) if event.data else {}
                    if not isinstance(data, dict):
                        raise ValueError("the event is not a JSON object")
                    kind = str(data.get("type"))
                    if kind == "error":
                        error = data.get("error") or {}
                        message = error.get("message", error) if isinstance(error, dict) else error
                        raise UpstreamStreamError(f"{where} failed mid-stream: {self.redact(str(message))}")
                    if kind == "message_start":
                        _count(usage, (data.get("message") or {}).get("usage") or {})
                    elif kind == "content_block_start":
                        block = data.get("content_block") or {}
                        if block.get("type") == "tool_use":
                            tool_index[int(data["index"])] = calls
                            yield Delta("", (ToolCallDelta(calls, text(block.get("id"), "id"), text(block.get("name"), "name")),))
                            calls += 1
                        elif block.get("type") == "text" and block.get("text"):
                            yield Delta(text(block["text"], "text"))
                    elif kind == "content_block_delta":
                        delta = data.get("delta") or {}
                        which = delta.get("type")
                        if which == "text_delta":
                            yield Delta(text(delta.get("text"), "delta.text"))
                        elif which == "thinking_delta":
                            yield Delta("", reasoning=text(delta.get("thinking"), "delta.thinking"))
                        elif which == "signature_delta":
                            yield Delta("", signature=text(delta.get("signature"), "delta.signature"))
                        elif which == "input_json_delta":
                            index = tool_index.get(int(data["index"]))
                            if index is None:
                                raise ValueError("input_json_delta for a block that is not a tool_use")
                            yield Delta("", (ToolCallDelta(index, arguments=text(delta.get("partial_json"), "partial_json")),))
                    elif kind == "message_delta":
                        delta = data.get("delta") or {}
                        reason = text(delta.get("stop_reason"), "stop_reason") or reason
                        stop_sequence = delta.get("stop_sequence") if isinstance(delta.get("stop_sequence"), str) else None
                        _count(usage, data.get("usage") or {})
                    elif kind == "message_stop":
                        yield Finish(finish_reason(reason or "end_turn"), Usage(
                            usage["input"] + usage["cache_read"] + usage["cache_write"], usage["output"],
                            cache_read_tokens=usage["cache_read"], cache_write_tokens=usage["cache_write"],
                        ), stop_sequence)
                        await self.finish_reading(events)
                        return
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                    raise UpstreamStreamError(
                        f"{where} sent a malformed event ({exc}): {self.redact(event.data[:200])!r}"
                    ) from exc
        raise UpstreamStreamError(f"{where} ended the stream before message_stop")


def _count(usage: dict[str, int], raw: dict[str, Any]) -> None:
    """Anthropic's usage: input at message_start, output (cumulative) at message_delta; later values win."""
    for key, name in (("input", "input_tokens"), ("output", "output_tokens"),
                      ("cache_read", "cache_read_input_tokens"), ("cache_write", "cache_creation_input_tokens")):
        if raw.get(name) is not None:
            usage[key] = count(raw[name], f"usage.{name}")
