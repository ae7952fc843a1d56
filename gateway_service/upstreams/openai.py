"""OpenAI-compatible chat completions: ``POST /v1/chat/completions`` with ``stream: true``.

Server-sent events: ``data: {chunk}`` with ``choices[0].delta.content``, a chunk
with ``finish_reason``, then (with ``stream_options.include_usage``) a chunk with
``choices: []`` and ``usage``, then ``data: [DONE]``. An error mid-stream arrives
as ``data: {"error": {...}}``.
"""

from __future__ import annotations

import codecs
from collections.abc import AsyncGenerator
from typing import Any

import aiohttp
import orjson
from httpx_sse import ServerSentEvent

# httpx-sse's decoders follow the SSE spec's line and field rules; its EventSource reads httpx responses
# only, so they are fed aiohttp's bytes here (pyproject pins httpx-sse below 0.5 for this module's path).
from httpx_sse._decoders import SSEDecoder, SSELineDecoder

from ..domain import ChatParams, Delta, Embedded, Finish, Usage
from ..errors import UpstreamStreamError
from ..toolcalls import fragment_of
from .checks import count, text
from .hosts import Host
from .http import HttpUpstream, body_chunks

__all__ = ["OpenAIUpstream", "openai_body", "server_sent_events"]

OLLAMA_ONLY = frozenset({"options", "keep_alive"})


def openai_body(model: str, params: ChatParams) -> dict[str, Any]:
    """The request as the client sent it (messages with tool calls and content parts, tools,
    response_format, any field the gateway does not know), with the chosen model, streamed, with usage."""
    # Ollama's runtime settings (from its API on the gateway) mean nothing to an OpenAI-compatible server.
    extra = {k: v for k, v in params.extra.items() if k not in OLLAMA_ONLY}
    think = extra.pop("think", None)  # Ollama's: a level is OpenAI's reasoning_effort; true/false: the model decides
    if isinstance(think, str) and "reasoning_effort" not in extra:
        extra["reasoning_effort"] = think
    body: dict[str, Any] = {
        **extra,
        "model": model,
        "messages": list(params.raw_messages) or [{"role": m.role, "content": m.content} for m in params.messages],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    for key in ("temperature", "top_p", "max_tokens", "seed"):
        value = getattr(params, key)
        if value is not None:
            body[key] = value
    if params.stop:
        body["stop"] = list(params.stop)
    return body


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
    if not isinstance(raw, dict):
        raise ValueError("usage is not an object")
    return Usage(count(raw.get("prompt_tokens", 0), "usage.prompt_tokens"),
                 count(raw.get("completion_tokens", 0), "usage.completion_tokens"))


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
        sent = {k: v for k, v in options.items() if k not in OLLAMA_ONLY and k != "truncate"}
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
        finish_reason: str | None = None
        usage: Usage | None = None
        async with self.post(host, model, body) as response:
            kind = response.headers.get("content-type", "")
            if "text/event-stream" not in kind:
                raise UpstreamStreamError(f"{where} answered {kind or 'without a content type'}, not server-sent events")
            events = server_sent_events(response.content)
            async for event in events:
                if event.data == "[DONE]":
                    if finish_reason is None:
                        raise UpstreamStreamError(f"{where} sent [DONE] without a finish_reason")
                    yield Finish(finish_reason, usage)
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
                            finish_reason = reason
                except (orjson.JSONDecodeError, ValueError) as exc:
                    raise UpstreamStreamError(
                        f"{where} sent a malformed chunk ({exc}): {self.redact(event.data[:200])!r}"
                    ) from exc
        raise UpstreamStreamError(f"{where} ended the stream before data: [DONE]")
