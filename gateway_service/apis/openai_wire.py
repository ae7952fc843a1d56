"""OpenAI's chat-completions wire format: the request the gateway reads, the bodies and events it writes."""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..config import LimitSettings
from ..domain import (
    ChatParams,
    Delta,
    Finish,
    Image,
    Message,
    Opaque,
    OutputFormat,
    Part,
    ReasoningAsk,
    Text,
    Tool,
    ToolCall,
    ToolChoice,
    ToolResult,
)
from ..errors import InvalidRequest
from ..toolcalls import wire_fragment
from .shape import count_shape

__all__ = [
    "ChatCompletionRequest",
    "ChunkWriter",
    "check_shape",
    "delta_body",
    "describe",
    "error_body",
    "message_body",
    "sse",
    "usage",
]


class _ImageUrl(BaseModel):
    model_config = ConfigDict(extra="allow")

    url: str
    detail: str | None = None


class _ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")  # input_audio, file: passed on as sent

    type: str
    text: str | None = None
    image_url: _ImageUrl | None = None

    @model_validator(mode="after")
    def _complete(self) -> _ContentPart:
        if self.type == "text" and self.text is None:
            raise ValueError("a text part needs text")
        if self.type == "image_url" and self.image_url is None:
            raise ValueError("an image_url part needs image_url: {\"url\": ...}")
        return self


class _Function(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    arguments: str  # JSON text, as OpenAI carries it


class _ToolCall(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    type: Literal["function"] = "function"
    function: _Function


class _Message(BaseModel):
    model_config = ConfigDict(extra="allow")  # what else a message carries is passed on as sent

    role: str
    content: str | list[_ContentPart] | None = None
    tool_calls: list[_ToolCall] | None = None
    tool_call_id: str | None = None
    name: str | None = None

    def text(self) -> str:
        """The text the router and the limits see: text parts only (images and audio are passed on)."""
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        return "".join(part.text or "" for part in self.content if part.type == "text")


class _JsonSchema(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class _ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["text", "json_object", "json_schema"]
    json_schema: _JsonSchema | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> _ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type json_schema needs json_schema: {\"name\": ..., \"schema\": {...}}")
        return self


class _StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """OpenAI's request: the fields the gateway reads or checks, and every other one kept to pass on."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[_Message]  # empty: refused by the chat core, in the same words for every API
    stream: bool = False
    stream_options: _StreamOptions | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    n: Literal[1] | None = None
    response_format: _ResponseFormat | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None

    def params(self) -> ChatParams:
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        own = dict(self.model_extra or {})  # what the gateway does not read goes to OpenAI-compatible upstreams as sent
        metadata = own.get("metadata")
        effort = own.pop("reasoning_effort", None)
        parallel = own.pop("parallel_tool_calls", None)
        tools = [t for t in self.tools or () if t.get("type", "function") == "function"]
        return ChatParams(
            messages=tuple(_message(m, i) for i, m in enumerate(self.messages)),
            temperature=self.temperature,
            top_p=self.top_p,
            max_tokens=self.max_completion_tokens or self.max_tokens,
            stop=stop,
            seed=self.seed,
            tools=tuple(_tool(t, i) for i, t in enumerate(tools)),
            tool_choice=_tool_choice(self.tool_choice, parallel),
            output=_output(self.response_format),
            reasoning=ReasoningAsk(effort=effort) if isinstance(effort, str) else None,
            metadata=metadata if isinstance(metadata, dict) else {},
            passthrough={"openai": own} if own else {},
            ignored=tuple(f"tools[type={t.get('type')}]" for t in self.tools or () if t not in tools),
        )


def _message(m: _Message, i: int) -> Message:
    """An OpenAI message as typed parts: text and images (other parts kept whole for OpenAI upstreams), the
    assistant's tool calls, a tool message's result."""
    parts: list[Part] = []
    if isinstance(m.content, str):
        if m.content:
            parts.append(Text(m.content))
    else:
        for part in m.content or ():
            if part.type == "text":
                parts.append(Text(part.text or ""))
            elif part.type == "image_url" and part.image_url is not None:
                parts.append(image_of(part.image_url.url, part.image_url.detail))
            else:
                parts.append(Opaque("openai", part.model_dump(exclude_unset=True)))
    if m.role == "tool":
        content = tuple(p for p in parts if isinstance(p, Text | Image))
        return Message("tool", (ToolResult(m.tool_call_id or "", content, name=m.name or ""),))
    parts.extend(ToolCall(c.id, c.function.name, c.function.arguments) for c in m.tool_calls or ())
    return Message(m.role, tuple(parts), m.name or "")


def image_of(url: str, detail: str | None = None) -> Image:
    if url.startswith("data:") and ";base64," in url:
        head, data = url.split(";base64,", 1)
        return Image(head[5:], data, detail=detail)
    return Image(url=url, detail=detail)


def _tool(raw: dict[str, Any], i: int) -> Tool:
    function = raw.get("function")
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise InvalidRequest(f"invalid request: tools.{i}: a function tool needs function.name")
    parameters = function.get("parameters")
    return Tool(
        function["name"], str(function.get("description") or ""),
        parameters if isinstance(parameters, dict) else {"type": "object", "properties": {}},
        function.get("strict") if isinstance(function.get("strict"), bool) else None,
    )


def _tool_choice(raw: str | dict[str, Any] | None, parallel: Any) -> ToolChoice | None:
    parallel = parallel if isinstance(parallel, bool) else None
    if raw is None:
        return ToolChoice(parallel=parallel) if parallel is not None else None
    if raw in ("auto", "none", "required"):
        return ToolChoice(raw, parallel=parallel)  # type: ignore[arg-type]
    name = (raw.get("function") or {}).get("name") if isinstance(raw, dict) else None
    if not isinstance(name, str) or not name:
        raise InvalidRequest(
            'invalid request: tool_choice: give "auto", "none", "required" or {"type": "function", "function": {"name": ...}}'
        )
    return ToolChoice("tool", name, parallel)


def _output(response_format: _ResponseFormat | None) -> OutputFormat | None:
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object":
        return OutputFormat("json")
    schema = response_format.json_schema
    assert schema is not None  # checked by _ResponseFormat
    return OutputFormat("json_schema", schema.schema_, schema.name, schema.strict)


class RouteOnlyRequest(ChatCompletionRequest):
    """``POST /v1/route``'s body: a chat request, which of the router's scorers decides (empty: its default), and
    whether it is a preview."""

    scorer: str = Field("", max_length=200)
    preview: bool = False  # decide only: the router records nothing (the routing page's calls)


def check_shape(body: Any, limits: LimitSettings) -> None:
    """Refuse a parsed body that is too big before it is validated (see apis/shape.py)."""
    count_shape(body, limits)


def describe(exc: ValidationError) -> str:
    """A validation error in one line: the most specific place, what is wrong there, and how many more.

    Union members (``str``, ``list[...]``) are left out of the place; where a value fits none of a
    union's shapes, each shape's complaint is said."""
    errors = exc.errors()

    def place(error: Any) -> list[str | int]:
        return [p for p in error["loc"] if not (isinstance(p, str) and ("[" in p or p in _SCALARS))]

    deepest = max(len(place(e)) for e in errors)
    chosen = [e for e in errors if len(place(e)) == deepest]
    where = ".".join(str(p) for p in place(chosen[0])) or "body"
    said = " or ".join(dict.fromkeys(_INSTANCE.sub("", e["msg"]) for e in chosen if place(e) == place(chosen[0])))
    more = f" ({len(errors)} errors)" if len(errors) > 1 else ""
    return f"invalid request: {where}: {said}{more}"


_SCALARS = frozenset({"str", "int", "float", "bool", "none"})
_INSTANCE = re.compile(r" or instance of \w+")


def error_body(message: str, error_type: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}


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
        body["tool_calls"] = [wire_fragment(call) for call in delta.tool_calls]
    if delta.reasoning:
        body["reasoning_content"] = delta.reasoning
    return body


def message_body(text: str, reasoning: str, tool_calls: list[ToolCall]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text or (None if tool_calls else ""), "refusal": None}
    if tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in tool_calls
        ]
    if reasoning:
        message["reasoning_content"] = reasoning
    return message
