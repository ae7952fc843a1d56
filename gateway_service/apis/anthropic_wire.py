"""Anthropic's Messages wire format: the request the gateway reads, the events and bodies it writes.

Parsed into the domain at once: ``system`` (a string or text blocks) and ``role: "system"`` messages
(Claude Code sends one inside ``messages``) become system messages; a user message's ``tool_result``
blocks are split out, in document order, into tool messages, so nothing downstream takes a tool's
output for the user's words. Fields and block types the gateway does not use (``cache_control`` aside,
which is kept as a hint; ``context_management``, ``safeguards``, ``document`` blocks...) are ignored,
as Ollama's own Messages endpoint does, and named at debug level, never refused.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..config import LimitSettings
from ..core.exchange import Exchange
from ..domain import (
    ChatParams,
    Delta,
    Finish,
    Image,
    Message,
    OutputFormat,
    Part,
    Reasoning,
    ReasoningAsk,
    RouteDecision,
    Text,
    Tool,
    ToolCall,
    ToolChoice,
    ToolResult,
    Usage,
)
from ..errors import GatewayError, InvalidRequest
from ..toolcalls import arguments_object
from .chat_api import Answer, ParsedChat
from .shape import count_shape

__all__ = ["MessagesRequest", "MessagesWriter", "check_shape", "error_body", "error_type", "stop_reason", "whole_message"]

logger = logging.getLogger(__name__)

IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
# Each status as Anthropic names it (its error "type"); 503 (busy, shutting down) is its 529 overloaded_error.
ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
    405: "invalid_request_error", 408: "timeout_error", 413: "request_too_large", 429: "rate_limit_error",
    503: "overloaded_error", 529: "overloaded_error",
}


class _Block(BaseModel):
    model_config = ConfigDict(extra="allow")  # the fields of each block type, read below by type

    type: str


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["user", "assistant", "system"]
    content: str | list[_Block]


class _Tool(BaseModel):
    model_config = ConfigDict(extra="ignore")  # cache_control, defer_loading, input_examples...

    name: str = Field(min_length=1, max_length=200)
    type: str | None = None  # "custom" or absent: a client tool; "web_search_20250305" and the like: a server tool
    description: str = ""
    input_schema: dict[str, Any] | None = None
    strict: bool | None = None


class _ToolChoice(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class _Thinking(BaseModel):
    model_config = ConfigDict(extra="ignore")  # display, ...

    type: str  # enabled, disabled, adaptive
    budget_tokens: int | None = Field(None, ge=0)


class _OutputConfig(BaseModel):
    model_config = ConfigDict(extra="ignore")

    effort: str | None = None
    format: dict[str, Any] | None = None


class MessagesRequest(BaseModel):
    """The fields of a Messages request the gateway reads; any other is ignored (see the module's doc)."""

    model_config = ConfigDict(extra="ignore")

    model: str
    messages: list[_Message]
    max_tokens: int = Field(ge=1)
    system: str | list[_Block] | None = None
    stream: bool = False
    stop_sequences: list[str] | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = Field(None, ge=0)
    tools: list[_Tool] | None = None
    tool_choice: _ToolChoice | None = None
    thinking: _Thinking | None = None
    output_config: _OutputConfig | None = None
    output_format: dict[str, Any] | None = None  # the structured-outputs beta's place for it
    metadata: dict[str, Any] | None = None

    @field_validator("temperature")
    @classmethod
    def _temperature(cls, value: float | None) -> float | None:
        if value is not None and not 0.0 <= value <= 1.0:
            raise ValueError("temperature must be within [0, 1]")
        return value

    def parsed(self) -> ParsedChat:
        return ParsedChat(self.model, self.params(), self.stream)

    def params(self) -> ChatParams:
        ignored: list[str] = []
        messages: list[Message] = []
        if self.system:
            messages.append(Message("system", _text_parts(self.system, "system", ignored)))
        called: set[str] = set()
        for i, message in enumerate(self.messages):
            messages.extend(_messages(message, i, called, ignored))
        tools = tuple(
            Tool(t.name, t.description, t.input_schema or {"type": "object", "properties": {}}, t.strict)
            for t in self.tools or () if t.type in (None, "custom")
        )
        ignored += [f"tools[{t.name}]" for t in self.tools or () if t.type not in (None, "custom")]
        if ignored and logger.isEnabledFor(logging.DEBUG):
            logger.debug("ignoring what this gateway does not take: %s", sorted(set(ignored))[:20])
        metadata = self.metadata or {}
        return ChatParams(
            messages=tuple(messages),
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            max_tokens=self.max_tokens,
            stop=tuple(self.stop_sequences or ()),
            tools=tools,
            tool_choice=_choice(self.tool_choice),
            output=_output(self.output_config, self.output_format),
            reasoning=_reasoning(self.thinking, self.output_config),
            metadata={k: v for k, v in metadata.items() if isinstance(v, str | int | float | bool)},
            ignored=tuple(dict.fromkeys(i for i in ignored if i.startswith("tools["))),
        )


def _text_parts(content: str | list[_Block], where: str, ignored: list[str]) -> tuple[Part, ...]:
    if isinstance(content, str):
        return (Text(content),) if content else ()
    parts: list[Part] = []
    for block in content:
        if block.type == "text":
            parts.append(Text(_string(block, "text", where), cache=_cached(block)))
        else:
            ignored.append(f"{where}: {block.type}")
    return tuple(parts)


def _messages(message: _Message, i: int, called: set[str], ignored: list[str]) -> list[Message]:
    """One Messages message as the domain's: a user message's tool results each become a tool message, in order."""
    where = f"messages.{i}"
    if isinstance(message.content, str):
        return [Message.of(message.role, message.content)]
    if message.role == "system":
        return [Message("system", _text_parts(message.content, where, ignored))]
    out: list[Message] = []
    parts: list[Part] = []
    for j, block in enumerate(message.content):
        at = f"{where}.content.{j}"
        kind = block.type
        if kind == "text":
            parts.append(Text(_string(block, "text", at), cache=_cached(block)))
        elif kind == "image":
            parts.append(_image(block, at))
        elif kind == "tool_use" and message.role == "assistant":
            call_id, name = _string(block, "id", at), _string(block, "name", at)
            arguments = block.model_extra.get("input", {}) if block.model_extra else {}
            if not isinstance(arguments, dict):
                raise InvalidRequest(f"invalid request: {at}.input: a tool_use block's input must be an object")
            called.add(call_id)
            parts.append(ToolCall(call_id, name, json.dumps(arguments, ensure_ascii=False)))
        elif kind == "tool_result" and message.role == "user":
            if parts:
                out.append(Message("user", tuple(parts)))
                parts = []
            out.append(Message("tool", (_tool_result(block, at, called),)))
        elif kind == "thinking" and message.role == "assistant":
            parts.append(Reasoning(_string(block, "thinking", at), str(_field(block, "signature") or ""), origin="anthropic"))
        elif kind == "redacted_thinking" and message.role == "assistant":
            parts.append(Reasoning(redacted=_string(block, "data", at), origin="anthropic"))
        elif kind in ("tool_use", "tool_result"):
            raise InvalidRequest(f"invalid request: {at}: a {kind} block belongs in a{'n assistant' if kind == 'tool_use' else ' user'} message")
        else:
            ignored.append(f"block {kind}")
    if parts or not out:
        out.append(Message(message.role, tuple(parts)))
    return out


def _tool_result(block: _Block, at: str, called: set[str]) -> ToolResult:
    call_id = _string(block, "tool_use_id", at)
    if call_id not in called:
        raise InvalidRequest(
            f"invalid request: {at}: tool_result for tool_use_id {call_id!r}, which no earlier tool_use block made; "
            "each tool_result must answer a tool_use of the assistant message before it"
        )
    content = _field(block, "content")
    parts: list[Text | Image] = []
    if isinstance(content, str):
        parts.append(Text(content))
    elif isinstance(content, list):
        for k, raw in enumerate(content):
            inner = _Block.model_validate(raw) if isinstance(raw, dict) else None
            if inner is None:
                raise InvalidRequest(f"invalid request: {at}.content.{k}: a content block must be an object")
            if inner.type == "text":
                parts.append(Text(_string(inner, "text", f"{at}.content.{k}")))
            elif inner.type == "image":
                parts.append(_image(inner, f"{at}.content.{k}"))
    elif content is not None:
        raise InvalidRequest(f"invalid request: {at}.content: give a string or a list of text and image blocks")
    return ToolResult(call_id, tuple(parts), is_error=_field(block, "is_error") is True)


def _image(block: _Block, at: str) -> Image:
    source = _field(block, "source")
    if not isinstance(source, dict):
        raise InvalidRequest(f"invalid request: {at}.source: an image block needs a source (base64 or url)")
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        return Image(url=source["url"])
    if source.get("type") != "base64":
        raise InvalidRequest(f"invalid request: {at}.source.type: give base64 or url")
    media_type, data = source.get("media_type"), source.get("data")
    if media_type not in IMAGE_TYPES:
        raise InvalidRequest(f"invalid request: {at}.source.media_type: give one of {', '.join(sorted(IMAGE_TYPES))}")
    if not isinstance(data, str) or not _is_image(data):
        raise InvalidRequest(f"invalid request: {at}.source.data: not a base64 image (PNG, JPEG, GIF or WebP bytes)")
    return Image(str(media_type), data)


def _is_image(data: str) -> bool:
    try:
        head = base64.b64decode(data[:64] + "=" * (-len(data[:64]) % 4), validate=True)
    except (binascii.Error, ValueError):
        return False
    return head.startswith((b"\x89PNG", b"\xff\xd8\xff", b"GIF8")) or head[8:12] == b"WEBP"


def _field(block: _Block, name: str) -> Any:
    return (block.model_extra or {}).get(name)


def _string(block: _Block, name: str, at: str) -> str:
    value = _field(block, name)
    if not isinstance(value, str):
        raise InvalidRequest(f"invalid request: {at}.{name}: a {block.type} block needs {name} as a string")
    return value


def _cached(block: _Block) -> bool:
    return isinstance(_field(block, "cache_control"), dict)


def _choice(choice: _ToolChoice | None) -> ToolChoice | None:
    if choice is None:
        return None
    parallel = None if choice.disable_parallel_tool_use is None else not choice.disable_parallel_tool_use
    if choice.type == "tool":
        if not choice.name:
            raise InvalidRequest("invalid request: tool_choice.name: a tool_choice of type tool names the tool")
        return ToolChoice("tool", choice.name, parallel)
    return ToolChoice({"auto": "auto", "any": "required", "none": "none"}[choice.type], parallel=parallel)  # type: ignore[arg-type]


def _output(config: _OutputConfig | None, beta: dict[str, Any] | None) -> OutputFormat | None:
    given = (config.format if config is not None else None) or beta
    if not given:
        return None
    schema = given.get("schema")
    if given.get("type") != "json_schema" or not isinstance(schema, dict):
        raise InvalidRequest('invalid request: output_config.format: give {"type": "json_schema", "schema": {...}}')
    return OutputFormat("json_schema", schema, "output")


def _reasoning(thinking: _Thinking | None, config: _OutputConfig | None) -> ReasoningAsk | None:
    """Thinking switched on (``enabled``, its budget, ``output_config.effort``) or off; None when the client leaves it
    to the model (``adaptive``, Claude Code's, or nothing): then nothing is sent upstream, since Ollama refuses
    ``think`` and OpenAI ``reasoning_effort`` for a model that cannot reason."""
    if thinking is None or thinking.type not in ("enabled", "disabled"):
        return None
    if thinking.type == "disabled":
        return ReasoningAsk(enabled=False)
    return ReasoningAsk(enabled=True, effort=config.effort if config is not None else None,
                        budget_tokens=thinking.budget_tokens)


def check_shape(body: Any, limits: LimitSettings) -> None:
    """Refuse a parsed body that is too big before it is validated: messages, blocks (a tool result's too), images."""
    count_shape(body, limits, image="image", nested=True)


# -- what the gateway writes ------------------------------------------------------------------


def error_type(status: int) -> str:
    return ERROR_TYPES.get(status, "api_error")


def error_body(message: str, status: int, request_id: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type(status), "message": message}, "request_id": request_id}


def stop_reason(finish: Finish) -> str:
    if finish.stop_sequence is not None:
        return "stop_sequence"
    return {"length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"}.get(finish.reason, "end_turn")


def _usage(usage: Usage | None) -> dict[str, int]:
    """Anthropic's usage; unknown counts (an upstream that reported none) are 0, as its schema has no null."""
    if usage is None:
        return {"input_tokens": 0, "output_tokens": 0}
    return {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens,
            "cache_creation_input_tokens": usage.cache_write_tokens, "cache_read_input_tokens": usage.cache_read_tokens}


def message_id(request_id: str) -> str:
    return f"msg_{request_id}"


def tool_use_id() -> str:
    return f"toolu_{uuid.uuid4().hex[:24]}"


def whole_message(parsed: ParsedChat, route: RouteDecision, x: Exchange, answer: Answer) -> dict[str, Any]:
    """A non-streamed Messages answer: thinking, text and tool_use blocks, the stop reason and usage."""
    finish = answer.finish
    assert finish is not None
    content: list[dict[str, Any]] = []
    if answer.reasoning:
        content.append({"type": "thinking", "thinking": "".join(answer.reasoning), "signature": answer.signature})
    if answer.text:
        content.append({"type": "text", "text": "".join(answer.text)})
    for call in answer.tool_calls:
        content.append({"type": "tool_use", "id": _anthropic_id(call.id), "name": call.name, "input": _input(call)})
    return {
        "id": message_id(x.request_id), "type": "message", "role": "assistant", "model": route.model, "content": content,
        "stop_reason": stop_reason(finish), "stop_sequence": finish.stop_sequence, "usage": _usage(finish.usage),
    }


def _anthropic_id(call_id: str) -> str:
    return call_id if call_id.startswith("toolu_") else f"toolu_{call_id.removeprefix('call_')}"


def _input(call: ToolCall) -> dict[str, Any]:
    try:
        return arguments_object(call)
    except ValueError:
        return {}


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'), ensure_ascii=False)}\n\n".encode()


class MessagesWriter:
    """A Messages stream: message_start, then content blocks (thinking, text, tool_use) each opened, given its
    deltas and stopped, then message_delta with the stop reason and usage, and message_stop."""

    def __init__(self, parsed: ParsedChat, route: RouteDecision, x: Exchange) -> None:
        self._start: bytes | None = _event("message_start", {"type": "message_start", "message": {
            "id": message_id(x.request_id), "type": "message", "role": "assistant", "model": route.model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0},
        }}) + _event("ping", {"type": "ping"})
        self._index = -1
        self._open: str = ""  # the open block's kind: thinking, text, tool_use
        self._calls: dict[int, int] = {}  # a tool call's index in the stream -> its block's index

    def _opening(self) -> bytes:
        start, self._start = self._start or b"", None
        return start

    def _block(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._close()
        self._index += 1
        self._open = kind
        return out + _event("content_block_start", {"type": "content_block_start", "index": self._index, "content_block": block})

    def _close(self) -> bytes:
        if not self._open:
            return b""
        self._open = ""
        return _event("content_block_stop", {"type": "content_block_stop", "index": self._index})

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return _event("content_block_delta", {"type": "content_block_delta", "index": self._index, "delta": delta})

    def event(self, event: Delta | Finish) -> bytes:
        out = self._opening()
        if isinstance(event, Finish):
            usage = _usage(event.usage)
            return out + self._close() + _event("message_delta", {
                "type": "message_delta", "delta": {"stop_reason": stop_reason(event), "stop_sequence": event.stop_sequence},
                "usage": usage,
            }) + _event("message_stop", {"type": "message_stop"})
        if event.reasoning:
            if self._open != "thinking":
                out += self._block("thinking", {"type": "thinking", "thinking": "", "signature": ""})
            out += self._delta({"type": "thinking_delta", "thinking": event.reasoning})
        if event.signature and self._open == "thinking":
            out += self._delta({"type": "signature_delta", "signature": event.signature})
        if event.text:
            if self._open != "text":
                out += self._block("text", {"type": "text", "text": ""})
            out += self._delta({"type": "text_delta", "text": event.text})
        for call in event.tool_calls:
            if call.index not in self._calls:
                out += self._block("tool_use", {"type": "tool_use", "id": _anthropic_id(call.id or tool_use_id()),
                                                "name": call.name or "", "input": {}})
                self._calls[call.index] = self._index
            if call.arguments and self._calls[call.index] == self._index:  # calls stream one after another
                out += self._delta({"type": "input_json_delta", "partial_json": call.arguments})
        return out

    def failed(self, error: GatewayError) -> bytes:
        return self._opening() + _event("error", {"type": "error", "error": {
            "type": error_type(error.http_status), "message": str(error)}})
