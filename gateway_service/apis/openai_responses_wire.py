"""OpenAI's Responses wire format: the request the gateway reads, the events and the body it writes.

``input`` (a string, or items: messages of any role with ``input_text`` / ``input_image`` /
``output_text`` parts, ``function_call``, ``function_call_output``, ``reasoning``) is parsed into the
domain at once; consecutive assistant items (its text, its reasoning, its calls) become one assistant
message, as chat upstreams expect. Built-in tools the gateway cannot run (``web_search``,
``file_search``, ``computer_use_preview``...) are dropped before any upstream sees them, said in the
access line. Items and fields it does not use are ignored, never refused.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

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
from .chat_api import Answer, ParsedChat
from .openai_wire import image_of
from .shape import count_shape

__all__ = ["ResponsesContext", "ResponsesRequest", "ResponsesWriter", "check_shape", "output_items", "whole_response"]


class _Reasoning(BaseModel):
    model_config = ConfigDict(extra="ignore")

    effort: str | None = None
    summary: str | None = None


class _Text(BaseModel):
    model_config = ConfigDict(extra="ignore")  # verbosity

    format: dict[str, Any] | None = None


@dataclass(frozen=True)
class ResponsesContext:
    """What a Responses answer echoes: the request, its response's id, whether the conversation is stored."""

    request: ResponsesRequest
    response_id: str
    stored: bool


class ResponsesRequest(BaseModel):
    """The fields of a Responses request the gateway reads; any other is ignored (include, client_metadata...)."""

    model_config = ConfigDict(extra="ignore")

    model: str
    input: str | list[dict[str, Any]] = ""
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    reasoning: _Reasoning | None = None
    text: _Text | None = None
    stream: bool = False
    store: bool | None = None
    previous_response_id: str | None = None
    metadata: dict[str, Any] | None = None
    prompt_cache_key: str | None = Field(None, max_length=256)  # Codex's session id: a sticky session's key

    def items(self) -> list[dict[str, Any]]:
        """``input`` as items (a string is one user message)."""
        return [{"type": "message", "role": "user", "content": self.input}] if isinstance(self.input, str) else self.input

    def parsed(self, history: list[dict[str, Any]], response_id: str, stored: bool) -> ParsedChat:
        """The request with the stored conversation it continues (``history``, earlier items) before its input."""
        context = ResponsesContext(self, response_id, stored)
        return ParsedChat(self.model, self.params(history), self.stream, context)

    def params(self, history: list[dict[str, Any]] | None = None) -> ChatParams:
        messages: list[Message] = []
        if self.instructions:
            messages.append(Message.of("system", self.instructions))
        ignored: list[str] = []
        messages.extend(_conversation([*(history or ()), *self.items()], ignored))
        tools: list[Tool] = []
        for i, raw in enumerate(self.tools or ()):
            if raw.get("type") == "function":
                tools.append(_tool(raw, i))
            else:
                ignored.append(f"tools[{raw.get('type')}]")
        metadata = self.metadata or {}
        return ChatParams(
            messages=tuple(messages),
            temperature=self.temperature,
            top_p=self.top_p,
            max_tokens=self.max_output_tokens,
            tools=tuple(tools),
            tool_choice=_choice(self.tool_choice, self.parallel_tool_calls),
            output=_output(self.text),
            reasoning=ReasoningAsk(effort=self.reasoning.effort) if self.reasoning and self.reasoning.effort else None,
            metadata={k: v for k, v in metadata.items() if isinstance(v, str | int | float | bool)},
            ignored=tuple(dict.fromkeys(ignored)),
            session=self.prompt_cache_key or "",
        )


def _conversation(items: list[dict[str, Any]], ignored: list[str]) -> list[Message]:
    out: list[Message] = []
    assistant: list[Part] = []  # the assistant's items so far, joined into one message
    called: set[str] = set()

    def flush() -> None:
        if assistant:
            out.append(Message("assistant", tuple(assistant)))
            assistant.clear()

    for i, item in enumerate(items):
        at = f"input.{i}"
        if not isinstance(item, dict):
            raise InvalidRequest(f"invalid request: {at}: an input item must be an object")
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "system", "developer", "assistant"):
                raise InvalidRequest(f"invalid request: {at}.role: give user, system, developer or assistant")
            parts = _parts(item.get("content"), at)
            if role == "assistant":
                assistant.extend(parts)
            else:
                flush()
                out.append(Message(role, parts))
        elif kind == "function_call":
            call_id, name, arguments = item.get("call_id"), item.get("name"), item.get("arguments", "{}")
            if not isinstance(call_id, str) or not isinstance(name, str) or not isinstance(arguments, str):
                raise InvalidRequest(f"invalid request: {at}: a function_call needs call_id, name and arguments (JSON text)")
            called.add(call_id)
            assistant.append(ToolCall(call_id, name, arguments))
        elif kind == "function_call_output":
            call_id = item.get("call_id")
            if not isinstance(call_id, str) or call_id not in called:
                raise InvalidRequest(
                    f"invalid request: {at}: no function_call with call_id {call_id!r} before this function_call_output"
                )
            flush()
            output = item.get("output")
            content = (Text(output),) if isinstance(output, str) else tuple(
                p for p in _parts(output, f"{at}.output") if isinstance(p, Text | Image))
            out.append(Message("tool", (ToolResult(call_id, content),)))
        elif kind == "reasoning":
            summary = "".join(s.get("text", "") for s in item.get("summary") or () if isinstance(s, dict))
            encrypted = item.get("encrypted_content")
            assistant.append(Reasoning(summary, redacted=encrypted if isinstance(encrypted, str) else "", origin="openai"))
        else:
            ignored.append(f"input[{kind}]")
    flush()
    return out


def _parts(content: Any, at: str) -> tuple[Part, ...]:
    if isinstance(content, str):
        return (Text(content),) if content else ()
    if not isinstance(content, list):
        raise InvalidRequest(f"invalid request: {at}.content: give a string or a list of content parts")
    parts: list[Part] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            text = part.get("text")
            if not isinstance(text, str):
                raise InvalidRequest(f"invalid request: {at}.content.{j}.text: a {kind} part needs text")
            parts.append(Text(text))
        elif kind == "refusal":
            parts.append(Text(str(part.get("refusal", ""))))
        elif kind == "input_image":
            url = part.get("image_url")
            if not isinstance(url, str):
                raise InvalidRequest(f"invalid request: {at}.content.{j}: an input_image needs image_url (file_id is not served)")
            parts.append(image_of(url, part.get("detail")))
        elif kind is None:
            raise InvalidRequest(f"invalid request: {at}.content.{j}: a content part needs a type")
    return tuple(parts)


def _tool(raw: dict[str, Any], i: int) -> Tool:
    name, parameters = raw.get("name"), raw.get("parameters")
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"invalid request: tools.{i}.name: a function tool needs a name")
    return Tool(name, str(raw.get("description") or ""),
                parameters if isinstance(parameters, dict) else {"type": "object", "properties": {}},
                raw.get("strict") if isinstance(raw.get("strict"), bool) else None)


def _choice(raw: str | dict[str, Any] | None, parallel: bool | None) -> ToolChoice | None:
    if raw in ("auto", "none", "required"):
        return ToolChoice(raw, parallel=parallel)  # type: ignore[arg-type]
    if isinstance(raw, dict) and raw.get("type") == "function" and isinstance(raw.get("name"), str):
        return ToolChoice("tool", raw["name"], parallel)
    return ToolChoice(parallel=parallel) if parallel is not None else None


def _output(text: _Text | None) -> OutputFormat | None:
    given = text.format if text is not None else None
    if not given or given.get("type") == "text":
        return None
    if given.get("type") == "json_object":
        return OutputFormat("json")
    if given.get("type") == "json_schema" and isinstance(given.get("schema"), dict):
        strict = given.get("strict")
        return OutputFormat("json_schema", given["schema"], str(given.get("name") or "output"),
                            strict if isinstance(strict, bool) else None)
    raise InvalidRequest('invalid request: text.format: give {"type": "text"}, {"type": "json_object"} or '
                         '{"type": "json_schema", "name": ..., "schema": {...}}')


def check_shape(body: Any, limits: LimitSettings) -> None:
    """Refuse a parsed body that is too big before it is validated: input items, parts, images, tools."""
    count_shape(body, limits, items="input", noun="input items", image="input_image")


# -- what the gateway writes ------------------------------------------------------------------


def _usage(usage: Usage | None) -> dict[str, Any] | None:
    if usage is None:
        return None
    return {"input_tokens": usage.prompt_tokens, "input_tokens_details": {"cached_tokens": usage.cache_read_tokens},
            "output_tokens": usage.completion_tokens, "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
            "total_tokens": usage.total_tokens}


def _response(parsed: ParsedChat, route: RouteDecision, x: Exchange, created: int, status: str) -> dict[str, Any]:
    """The response object's fields, as OpenAI echoes them (output and usage filled at the end)."""
    context: ResponsesContext = parsed.context
    asked = context.request
    return {
        "id": context.response_id, "object": "response", "created_at": created, "status": status, "error": None,
        "incomplete_details": None, "instructions": asked.instructions, "max_output_tokens": asked.max_output_tokens,
        "model": route.model, "output": [], "parallel_tool_calls": asked.parallel_tool_calls is not False,
        "previous_response_id": asked.previous_response_id, "reasoning": {"effort": asked.reasoning.effort if asked.reasoning else None,
                                                    "summary": asked.reasoning.summary if asked.reasoning else None},
        "store": context.stored, "temperature": asked.temperature, "text": {"format": (asked.text.format if asked.text else None)
                                                                   or {"type": "text"}},
        "tool_choice": asked.tool_choice or "auto", "tools": asked.tools or [], "top_p": asked.top_p,
        "truncation": "disabled", "usage": None, "user": None, "metadata": asked.metadata or {},
    }


def _ended(body: dict[str, Any], finish: Finish) -> dict[str, Any]:
    if finish.reason == "length":
        body.update(status="incomplete", incomplete_details={"reason": "max_output_tokens"})
    else:
        body["status"] = "completed"
    body["usage"] = _usage(finish.usage)
    return body


def _item_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def _message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}] if status == "completed" else []
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}


def _reasoning_item(item_id: str, text: str | None) -> dict[str, Any]:
    summary = [{"type": "summary_text", "text": text}] if text is not None else []
    return {"id": item_id, "type": "reasoning", "summary": summary}


def _call_item(item_id: str, call: ToolCall, status: str = "completed") -> dict[str, Any]:
    return {"id": item_id, "type": "function_call", "status": status, "call_id": call.id, "name": call.name,
            "arguments": call.arguments}


def output_items(answer: Answer) -> list[dict[str, Any]]:
    """A whole answer as Responses output items: its reasoning, its text, its function calls."""
    items = [_reasoning_item(_item_id("rs"), "".join(answer.reasoning))] if answer.reasoning else []
    if answer.text:
        items.append(_message_item(_item_id("msg"), "".join(answer.text)))
    return items + [_call_item(_item_id("fc"), call) for call in answer.tool_calls]


def whole_response(parsed: ParsedChat, route: RouteDecision, x: Exchange, answer: Answer) -> dict[str, Any]:
    assert answer.finish is not None
    body = _response(parsed, route, x, int(time.time()), "completed")
    body["output"] = output_items(answer)
    return _ended(body, answer.finish)


class ResponsesWriter:
    """A Responses stream: response.created and .in_progress, then each output item added, its deltas, done;
    then response.completed (or .incomplete) with every item and the usage. Each event has its sequence_number."""

    def __init__(self, parsed: ParsedChat, route: RouteDecision, x: Exchange) -> None:
        self._body = _response(parsed, route, x, int(time.time()), "in_progress")
        self._seq = 0
        self._started = False
        self._open: str = ""  # reasoning, message, function_call
        self._id = ""
        self._text: list[str] = []
        self._call: ToolCall | None = None
        self._calls: set[int] = set()

    def _event(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, **fields, "sequence_number": self._seq}
        self._seq += 1
        return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'), ensure_ascii=False)}\n\n".encode()

    def _opening(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        return self._event("response.created", response=self._body) + self._event("response.in_progress", response=self._body)

    @property
    def _index(self) -> int:
        return len(self._body["output"])

    def _add(self, kind: str, item: dict[str, Any]) -> bytes:
        out = self._close()
        self._open, self._id, self._text = kind, item["id"], []
        out += self._event("response.output_item.added", output_index=self._index, item=item)
        if kind == "message":
            out += self._event("response.content_part.added", item_id=self._id, output_index=self._index, content_index=0,
                               part={"type": "output_text", "text": "", "annotations": []})
        elif kind == "reasoning":
            out += self._event("response.reasoning_summary_part.added", item_id=self._id, output_index=self._index,
                               summary_index=0, part={"type": "summary_text", "text": ""})
        return out

    def _close(self) -> bytes:
        kind, self._open = self._open, ""
        if not kind:
            return b""
        text, index, where = "".join(self._text), self._index, {"item_id": self._id, "output_index": self._index}
        if kind == "message":
            item = _message_item(self._id, text)
            out = self._event("response.output_text.done", **where, content_index=0, text=text, logprobs=[])
            out += self._event("response.content_part.done", **where, content_index=0, part=item["content"][0])
        elif kind == "reasoning":
            item = _reasoning_item(self._id, text)
            out = self._event("response.reasoning_summary_text.done", **where, summary_index=0, text=text)
            out += self._event("response.reasoning_summary_part.done", **where, summary_index=0, part=item["summary"][0])
        else:
            assert self._call is not None
            call = ToolCall(self._call.id, self._call.name, text)
            item = _call_item(self._id, call)
            out = self._event("response.function_call_arguments.done", **where, name=call.name, arguments=text)
        out += self._event("response.output_item.done", output_index=index, item=item)
        self._body["output"].append(item)
        return out

    def event(self, event: Delta | Finish) -> bytes:
        out = self._opening()
        if isinstance(event, Finish):
            out += self._close()
            body = _ended(self._body, event)
            kind = "response.incomplete" if body["status"] == "incomplete" else "response.completed"
            return out + self._event(kind, response=body)
        if event.reasoning:
            if self._open != "reasoning":
                out += self._add("reasoning", _reasoning_item(_item_id("rs"), None))
            self._text.append(event.reasoning)
            out += self._event("response.reasoning_summary_text.delta", item_id=self._id, output_index=self._index,
                               summary_index=0, delta=event.reasoning)
        if event.text:
            if self._open != "message":
                out += self._add("message", _message_item(_item_id("msg"), "", "in_progress"))
            self._text.append(event.text)
            out += self._event("response.output_text.delta", item_id=self._id, output_index=self._index, content_index=0,
                               delta=event.text, logprobs=[])
        for fragment in event.tool_calls:
            if fragment.index not in self._calls:
                self._calls.add(fragment.index)
                self._call = ToolCall(fragment.id or f"call_{uuid.uuid4().hex[:24]}", fragment.name or "", "")
                out += self._add("function_call", _call_item(_item_id("fc"), self._call, "in_progress"))
            if fragment.arguments and self._open == "function_call":
                self._text.append(fragment.arguments)
                out += self._event("response.function_call_arguments.delta", item_id=self._id, output_index=self._index,
                                   delta=fragment.arguments)
        return out

    def failed(self, error: GatewayError) -> bytes:
        out = self._opening()
        self._body.update(status="failed", error={"code": error.code or error.error_type, "message": str(error)})
        return out + self._event("response.failed", response=self._body)
