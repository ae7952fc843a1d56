"""OpenAI's chat-completions wire format: the request the gateway reads, the bodies and events it writes."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .domain import ChatParams, Delta, Finish, Message, RouteDecision

__all__ = ["ChatCompletionRequest", "ChunkWriter", "ToolCalls", "delta_body", "describe", "error_body", "message_body", "route_headers", "sse", "usage"]


class _ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")  # image_url, input_audio, file: passed on as sent

    type: str
    text: str | None = None


class _Message(BaseModel):
    model_config = ConfigDict(extra="allow")  # tool_calls, tool_call_id, name: passed on as sent

    role: str
    content: str | list[_ContentPart] | None = None

    def text(self) -> str:
        """The text the router and the limits see: text parts only (images and audio are passed on)."""
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        return "".join(part.text or "" for part in self.content if part.type == "text")


class _StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """OpenAI's request: the fields the gateway reads, and every other one kept to pass on."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[_Message] = Field(min_length=1)
    stream: bool = False
    stream_options: _StreamOptions | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    n: Literal[1] | None = None

    def params(self) -> ChatParams:
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        return ChatParams(
            messages=tuple(Message(m.role, m.text()) for m in self.messages),
            temperature=self.temperature,
            top_p=self.top_p,
            max_tokens=self.max_completion_tokens or self.max_tokens,
            stop=stop,
            seed=self.seed,
            raw_messages=tuple(m.model_dump(exclude_unset=True) for m in self.messages),
            extra=dict(self.model_extra or {}),
        )


def describe(exc: ValidationError) -> str:
    """A validation error in one line: where, what, and how many more."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    if first["type"] == "json_invalid":
        return f"the request body is not valid JSON: {first['msg']}"
    more = f" ({len(exc.errors())} errors)" if len(exc.errors()) > 1 else ""
    return f"invalid request: {where}: {first['msg']}{more}"


def error_body(message: str, error_type: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}


def route_headers(route: RouteDecision) -> dict[str, str]:
    return {
        "x-route-model": route.model,
        "x-route-routed": str(route.routed).lower(),
        "x-route-score": f"{route.score:.6f}",
        "x-route-threshold": f"{route.threshold:.6f}",
        "x-route-degraded": str(route.degraded).lower(),
        "x-route-fallback": str(route.fallback).lower(),
        "x-route-budget-limited": str(route.budget_limited).lower(),
        **({"x-route-rerouted-for": route.rerouted_for} if route.rerouted_for else {}),
    }


def sse(data: Any) -> bytes:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class ChunkWriter:
    """A stream's ``chat.completion.chunk`` events. Everything but the delta is the same in every chunk
    of a stream, so it is encoded once; a content-only delta (nearly all of them) costs one string
    encode. The bytes are those ``sse()`` writes for the whole object."""

    def __init__(self, base: dict[str, Any], include_usage: bool) -> None:
        self._base = base
        self._extra: dict[str, Any] = {"usage": None} if include_usage else {}
        head = json.dumps(base, separators=(",", ":"))[:-1]
        self._head = f'data: {head},"choices":[{{"index":0,"delta":'.encode()
        tail = ',"usage":null' if include_usage else ""
        self._tail = f',"logprobs":null,"finish_reason":null}}]{tail}}}\n\n'.encode()

    def delta(self, delta: Delta) -> bytes:
        if delta.tool_calls or delta.reasoning or not delta.text:
            body = json.dumps(delta_body(delta), separators=(",", ":"))
        else:
            body = '{"content":' + json.dumps(delta.text) + "}"
        return self._head + body.encode() + self._tail

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return sse({**self._base, "choices": [choice], **self._extra})


def usage(finish: Finish) -> dict[str, int] | None:
    """The token counts the upstream reported; None (JSON null) when it reported none (llama.cpp's
    server in streams): a usage of 0 tokens would be a wrong number, not a missing one."""
    if finish.usage is None:
        return None
    u = finish.usage
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "total_tokens": u.total_tokens}


def delta_body(delta: Delta) -> dict[str, Any]:
    """A streamed chunk's ``delta``, as OpenAI streams it: content, tool-call fragments, reasoning."""
    body: dict[str, Any] = {"content": delta.text} if delta.text or not (delta.tool_calls or delta.reasoning) else {}
    if delta.tool_calls:
        body["tool_calls"] = list(delta.tool_calls)
    if delta.reasoning:
        body["reasoning_content"] = delta.reasoning
    return body


class ToolCalls:
    """Streamed tool-call fragments assembled into whole calls, by index, as OpenAI's SDK does."""

    def __init__(self) -> None:
        self._calls: dict[int, dict[str, Any]] = {}

    def add(self, fragments: tuple[dict[str, Any], ...]) -> None:
        for fragment in fragments:
            call = self._calls.setdefault(int(fragment.get("index", 0)), {"function": {"arguments": ""}})
            for key in ("id", "type"):
                if fragment.get(key):
                    call[key] = fragment[key]
            function = fragment.get("function") or {}
            if function.get("name"):
                call["function"]["name"] = function["name"]
            call["function"]["arguments"] += function.get("arguments") or ""

    def assembled(self) -> list[dict[str, Any]]:
        return [{"type": "function", **self._calls[i]} for i in sorted(self._calls)]


def message_body(text: str, reasoning: str, tool_calls: list[dict[str, Any]]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text or (None if tool_calls else ""), "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    if reasoning:
        message["reasoning_content"] = reasoning
    return message
