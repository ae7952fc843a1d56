"""OpenAI-compatible chat completions: ``POST /v1/chat/completions`` with ``stream: true``.

Server-sent events: ``data: {chunk}`` with ``choices[0].delta.content``, a chunk
with ``finish_reason``, then (with ``stream_options.include_usage``) a chunk with
``choices: []`` and ``usage``, then ``data: [DONE]``. An error mid-stream arrives
as ``data: {"error": {...}}``.
"""

from __future__ import annotations

import codecs
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import aiohttp
import orjson
from httpx_sse import ServerSentEvent

# httpx-sse's decoders follow the SSE spec's line and field rules; its EventSource reads httpx responses
# only, so they are fed aiohttp's bytes here (pyproject pins httpx-sse below 0.5 for this module's path).
from httpx_sse._decoders import SSEDecoder, SSELineDecoder

from ..domain import (
    ChatParams,
    Delta,
    Embedded,
    Finish,
    Image,
    Message,
    Opaque,
    OutputFormat,
    Part,
    Reasoning,
    Text,
    Tool,
    ToolCall,
    ToolResult,
    Usage,
    finish_reason,
)
from ..errors import UpstreamStreamError
from ..toolcalls import fragment_of
from .checks import count, text
from .hosts import Host
from .http import HttpUpstream, body_chunks

__all__ = ["OpenAIUpstream", "openai_body", "openai_format", "openai_messages", "openai_tool", "server_sent_events"]

def openai_body(model: str, params: ChatParams) -> dict[str, Any]:
    """The request in OpenAI's chat-completions shape, with the chosen model, streamed, with usage; what only
    OpenAI-compatible servers read (``passthrough["openai"]``: logprobs, user, ...) as the client sent it."""
    body: dict[str, Any] = {
        **params.own("openai"),
        "model": model,
        "messages": [wire for m in params.messages for wire in openai_messages(m)],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    for key in ("temperature", "top_p", "max_tokens", "seed"):
        value = getattr(params, key)
        if value is not None:
            body[key] = value
    if params.stop:
        body["stop"] = list(params.stop)
    if params.tools:
        body["tools"] = [openai_tool(tool) for tool in params.tools]
    choice = params.tool_choice
    if choice is not None:
        if params.tools or choice.mode == "none":
            body["tool_choice"] = (
                {"type": "function", "function": {"name": choice.name}} if choice.mode == "tool" else choice.mode
            )
        if choice.parallel is not None and params.tools:
            body["parallel_tool_calls"] = choice.parallel
    if params.output is not None:
        body["response_format"] = openai_format(params.output)
    if params.reasoning is not None and params.reasoning.effort:
        body["reasoning_effort"] = params.reasoning.effort
    return body


def openai_tool(tool: Tool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name}
    if tool.description:
        function["description"] = tool.description
    function["parameters"] = tool.parameters
    if tool.strict is not None:
        function["strict"] = tool.strict
    return {"type": "function", "function": function}


def openai_format(output: OutputFormat) -> dict[str, Any]:
    if output.kind == "json":
        return {"type": "json_object"}
    schema: dict[str, Any] = {"name": output.name}
    if output.schema is not None:
        schema["schema"] = output.schema
    if output.strict is not None:
        schema["strict"] = output.strict
    return {"type": "json_schema", "json_schema": schema}


def openai_messages(message: Message) -> list[dict[str, Any]]:
    """One message as OpenAI's messages (a message holding several tool results is one tool message each)."""
    results = [p for p in message.parts if isinstance(p, ToolResult)]
    if results:
        out = []
        for result in results:
            content: str | list[dict[str, Any]] = (
                result.text if not any(isinstance(p, Image) for p in result.content) else _content(result.content)
            )
            wire: dict[str, Any] = {"role": "tool", "tool_call_id": result.call_id, "content": content}
            if result.name:
                wire["name"] = result.name
            if result.is_error and isinstance(content, str):
                wire["content"] = f"Error: {content}" if content else "Error"
            out.append(wire)
        return out
    parts = [p for p in message.parts if not isinstance(p, ToolCall | Reasoning)]
    simple = all(isinstance(p, Text) for p in parts)
    wire = {"role": message.role, "content": "".join(p.text for p in parts if isinstance(p, Text)) if simple else _content(parts)}
    calls = message.tool_calls
    if calls:
        if simple and not wire["content"]:
            wire["content"] = None
        wire["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in calls
        ]
    if message.name:
        wire["name"] = message.name
    return [wire]


def _content(parts: Sequence[Part]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, Text):
            out.append({"type": "text", "text": part.text})
        elif isinstance(part, Image):
            image: dict[str, Any] = {"url": part.data_url()}
            if part.detail is not None:
                image["detail"] = part.detail
            out.append({"type": "image_url", "image_url": image})
        elif isinstance(part, Opaque) and part.kind == "openai":
            out.append(part.data)
    return out


async def server_sent_events(body: aiohttp.StreamReader) -> AsyncGenerator[ServerSentEvent, None]:
    """The events of a ``text/event-stream`` body, decoded as they arrive (one read may hold several)."""
    text = codecs.getincrementaldecoder("utf-8")("replace")
    lines, fields = SSELineDecoder(), SSEDecoder()
    async for data in body_chunks(body):
        for line in lines.decode(text.decode(data)):
            event = fields.decode(line)
            if event is not None:
                yield event
    for line in lines.decode(text.decode(b"", final=True)) + lines.flush():
        event = fields.decode(line)
        if event is not None:
            yield event


def _usage(raw: Any) -> Usage:
    """OpenAI's usage, with the cached prompt tokens and the reasoning tokens where the server details them."""
    if not isinstance(raw, dict):
        raise ValueError("usage is not an object")
    prompt, completion = raw.get("prompt_tokens_details"), raw.get("completion_tokens_details")
    cached = prompt.get("cached_tokens") if isinstance(prompt, dict) else None
    reasoning = completion.get("reasoning_tokens") if isinstance(completion, dict) else None
    return Usage(count(raw.get("prompt_tokens", 0), "usage.prompt_tokens"),
                 count(raw.get("completion_tokens", 0), "usage.completion_tokens"),
                 cache_read_tokens=count(cached or 0, "usage.prompt_tokens_details.cached_tokens"),
                 reasoning_tokens=count(reasoning or 0, "usage.completion_tokens_details.reasoning_tokens"))


def _choice(choice: Any) -> tuple[Delta | None, str]:
    """One streamed choice: its delta (None when it carries nothing) and its finish_reason ("" if none)."""
    if not isinstance(choice, dict):
        raise ValueError("a choice is not an object")
    delta = choice.get("delta") or {}
    if not isinstance(delta, dict):
        raise ValueError("choices[].delta is not an object")
    content = text(delta.get("content"), "delta.content")
    reasoning = text(delta.get("reasoning_content"), "delta.reasoning_content")
    raw_calls = delta.get("tool_calls") or ()
    if not isinstance(raw_calls, list | tuple):
        raise ValueError("delta.tool_calls is not a list")
    calls = tuple(fragment_of(raw, i) for i, raw in enumerate(raw_calls))
    reason = text(choice.get("finish_reason"), "finish_reason")
    return (Delta(content, calls, reasoning) if content or calls or reasoning else None), reason


class OpenAIUpstream(HttpUpstream):
    path = "/chat/completions"
    models_path = "/models"

    def request_body(self, model: str, params: ChatParams) -> dict[str, Any]:
        return openai_body(model, params)

    def model_names(self, payload: Any) -> list[str]:
        return [entry["id"] for entry in payload["data"]]

    async def embed(self, model: str, inputs: list[str], options: dict[str, Any]) -> Embedded:
        """``POST /embeddings``, floats asked for (the gateway encodes base64 itself when its client wants it)."""
        sent = {k: v for k, v in options.items() if k not in ("options", "keep_alive", "truncate")}
        answer = await self.call(model, "/embeddings", {**sent, "model": model, "input": inputs, "encoding_format": "float"})
        try:
            rows = sorted(answer["data"], key=lambda row: row["index"])
            vectors = [[float(x) for x in row["embedding"]] for row in rows]
            tokens = (answer.get("usage") or {}).get("prompt_tokens")
        except (KeyError, TypeError, ValueError):
            raise UpstreamStreamError(f"upstream {self.name!r}: /embeddings for {model!r} sent a malformed answer") from None
        if len(vectors) != len(inputs):
            raise UpstreamStreamError(f"upstream {self.name!r}: {len(vectors)} embeddings for {len(inputs)} inputs")
        return Embedded(vectors, int(tokens) if tokens is not None else None)

    async def events(self, host: Host, model: str, body: dict[str, Any]) -> AsyncGenerator[Delta | Finish, None]:
        where = self.where(host, model)
        reason_given: str | None = None
        usage: Usage | None = None
        async with self.post(host, model, body) as response:
            kind = response.headers.get("content-type", "")
            if "text/event-stream" not in kind:
                raise UpstreamStreamError(f"{where} answered {kind or 'without a content type'}, not server-sent events")
            events = server_sent_events(response.content)
            async for event in events:
                if event.data == "[DONE]":
                    if reason_given is None:
                        raise UpstreamStreamError(f"{where} sent [DONE] without a finish_reason")
                    yield Finish(finish_reason(reason_given), usage)
                    await self.finish_reading(events)
                    return
                try:
                    chunk = orjson.loads(event.data)
                    if not isinstance(chunk, dict):
                        raise ValueError("the chunk is not a JSON object")
                    if chunk.get("error"):
                        error = chunk["error"]
                        message = error.get("message", error) if isinstance(error, dict) else error
                        raise UpstreamStreamError(f"{where} failed mid-stream: {self.redact(str(message))}")
                    if chunk.get("usage"):
                        usage = _usage(chunk["usage"])
                    for choice in chunk.get("choices") or ():
                        delta, reason = _choice(choice)
                        if delta is not None:
                            yield delta
                        if reason:
                            reason_given = reason
                except (orjson.JSONDecodeError, ValueError) as exc:
                    raise UpstreamStreamError(
                        f"{where} sent a malformed chunk ({exc}): {self.redact(event.data[:200])!r}"
                    ) from exc
        raise UpstreamStreamError(f"{where} ended the stream before data: [DONE]")
