"""OpenAI's chat-completions wire format: the request the gateway reads, the bodies and events it writes."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .domain import ChatParams, Finish, Message, RouteDecision
from .errors import InvalidRequest

__all__ = ["ChatCompletionRequest", "describe", "error_body", "route_headers", "sse", "usage"]


class _ContentPart(BaseModel):
    type: str
    text: str | None = None


class _Message(BaseModel):
    role: str
    content: str | list[_ContentPart] | None = None

    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        if any(part.type != "text" for part in self.content):
            raise InvalidRequest("only text content parts are supported")
        return "".join(part.text or "" for part in self.content)


class _StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The fields of OpenAI's request that the gateway honours; others are ignored."""

    model_config = ConfigDict(extra="ignore")

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
    }


def sse(data: Any) -> bytes:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def usage(finish: Finish) -> dict[str, int]:
    if finish.usage is None:
        return {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    u = finish.usage
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "total_tokens": u.total_tokens}
