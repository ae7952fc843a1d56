"""Ollama's native chat API: ``POST /api/chat``, streamed as NDJSON.

Each line is a JSON object with ``message.content``; the last has ``done: true``,
``done_reason`` and the token counts ``prompt_eval_count`` / ``eval_count``. An
error mid-stream arrives as a line ``{"error": "..."}``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncGenerator
from typing import Any

import orjson

from ..domain import ChatParams, Delta, Embedded, Finish, ToolCallDelta, Usage
from ..errors import InvalidRequest, UpstreamStreamError
from .checks import count, text
from .hosts import Host
from .http import HttpUpstream, body_lines

__all__ = ["OllamaUpstream", "ollama_body"]


# Request fields that do not change the answer, so an Ollama upstream may go without them.
IGNORED = frozenset({"user", "metadata", "store", "service_tier", "parallel_tool_calls"})


def ollama_body(model: str, params: ChatParams) -> dict[str, Any]:
    """The OpenAI-style request in Ollama's shape (max_tokens -> options.num_predict, response_format ->
    format, tools as they are, image data URLs -> images); what has no Ollama equivalent is refused,
    naming the field, never dropped in silence."""
    options: dict[str, Any] = {}
    if params.temperature is not None:
        options["temperature"] = params.temperature
    if params.top_p is not None:
        options["top_p"] = params.top_p
    if params.max_tokens is not None:
        options["num_predict"] = params.max_tokens
    if params.stop:
        options["stop"] = list(params.stop)
    if params.seed is not None:
        options["seed"] = params.seed
    body: dict[str, Any] = {"model": model, "messages": _messages(model, params), "stream": True}
    for key, value in params.extra.items():
        if key in ("frequency_penalty", "presence_penalty"):
            options[key] = value
        elif key == "response_format":
            body.update(_format(model, value))
        elif key == "tools":
            body["tools"] = value  # Ollama takes OpenAI's function-tool shape
        elif key == "tool_choice":
            if value not in ("auto", None):
                raise _unsupported(model, f"tool_choice={json.dumps(value)}", "Ollama picks tools itself (auto only)")
        elif key in ("keep_alive", "think"):
            body[key] = value
        elif key == "options" and isinstance(value, dict):  # Ollama's own options, from its API on the gateway
            options = {**value, **options}
        elif key not in IGNORED:
            raise _unsupported(model, key, "it has no equivalent in Ollama's /api/chat")
    if options:
        body["options"] = options
    return body


def _unsupported(model: str, field: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"{field} is not supported for model {model!r}, which Ollama serves: {why}; remove it")


def _format(model: str, response_format: Any) -> dict[str, Any]:
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "text":
        return {}
    if kind == "json_object":
        return {"format": "json"}
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        if isinstance(schema, dict):
            return {"format": schema}
    raise _unsupported(model, f"response_format={json.dumps(response_format)[:200]}", "give text, json_object or json_schema")


def _messages(model: str, params: ChatParams) -> list[dict[str, Any]]:
    if not params.raw_messages:
        return [{"role": m.role, "content": m.content} for m in params.messages]
    out = []
    for i, (raw, message) in enumerate(zip(params.raw_messages, params.messages, strict=True)):
        item: dict[str, Any] = {"role": message.role, "content": message.content}
        content = raw.get("content")
        if isinstance(content, list):
            images = []
            for part in content:
                if part.get("type") == "image_url":
                    url = str((part.get("image_url") or {}).get("url", ""))
                    if not url.startswith("data:") or ";base64," not in url:
                        raise _unsupported(model, f"messages[{i}] image_url {url[:60]!r}", "Ollama takes images as data URLs only")
                    images.append(url.split(";base64,", 1)[1])
                elif part.get("type") != "text":
                    raise _unsupported(model, f"messages[{i}] content part {part.get('type')!r}", "Ollama takes text and images")
            if images:
                item["images"] = images
        for call in raw.get("tool_calls") or ():
            function = call.get("function") or {}
            try:
                arguments = json.loads(function.get("arguments") or "{}")
            except json.JSONDecodeError:
                raise InvalidRequest(f"messages[{i}].tool_calls: arguments are not JSON") from None
            item.setdefault("tool_calls", []).append({"function": {"name": function.get("name"), "arguments": arguments}})
        if raw.get("role") == "tool" and raw.get("name"):
            item["tool_name"] = raw["name"]
        out.append(item)
    return out


class OllamaUpstream(HttpUpstream):
    path = "/api/chat"
    models_path = "/api/tags"

    def request_body(self, model: str, params: ChatParams) -> dict[str, Any]:
        return ollama_body(model, params)

    def model_names(self, payload: Any) -> list[str]:
        return [name for entry in payload["models"] for name in (entry.get("name"), entry.get("model")) if name]

    async def embed(self, model: str, inputs: list[str], options: dict[str, Any]) -> Embedded:
        """Ollama's ``POST /api/embed``."""
        body: dict[str, Any] = {"model": model, "input": inputs}
        for key, value in options.items():
            if key in ("dimensions", "truncate", "keep_alive", "options"):
                body[key] = value
            elif key not in IGNORED:
                raise _unsupported(model, key, "it has no equivalent in Ollama's /api/embed")
        answer = await self.call(model, "/api/embed", body)
        try:
            vectors = [[float(x) for x in row] for row in answer["embeddings"]]
            tokens = answer.get("prompt_eval_count")
        except (KeyError, TypeError, ValueError):
            raise UpstreamStreamError(f"upstream {self.name!r}: /api/embed for {model!r} sent a malformed answer") from None
        if len(vectors) != len(inputs):
            raise UpstreamStreamError(f"upstream {self.name!r}: {len(vectors)} embeddings for {len(inputs)} inputs")
        return Embedded(vectors, int(tokens) if tokens is not None else None)

    async def events(self, host: Host, model: str, body: dict[str, Any]) -> AsyncGenerator[Delta | Finish, None]:
        where = self.where(host, model)
        calls_made = 0
        async with self.post(host, model, body) as response:
            lines = body_lines(response.content)
            async for line in lines:
                if not line.strip():
                    continue
                try:
                    chunk = orjson.loads(line)
                    if not isinstance(chunk, dict):
                        raise ValueError("the line is not a JSON object")
                    if "error" in chunk:
                        raise UpstreamStreamError(f"{where} failed mid-stream: {self.redact(str(chunk['error']))}")
                    delta = _delta(chunk, calls_made)
                    done = chunk["done"]
                    if not isinstance(done, bool):
                        raise ValueError(f"done is {done!r}, not true or false")
                    finish = _finish(chunk, calls_made + len(delta.tool_calls)) if done else None
                except (orjson.JSONDecodeError, KeyError, ValueError) as exc:
                    text_ = line[:200].decode("utf-8", "replace")
                    raise UpstreamStreamError(f"{where} sent a malformed chunk ({exc}): {self.redact(text_)!r}") from exc
                calls_made += len(delta.tool_calls)
                if delta.text or delta.tool_calls or delta.reasoning:
                    yield delta
                if finish is not None:
                    yield finish
                    await self.finish_reading(lines)
                    return
        raise UpstreamStreamError(f"{where} ended the stream before its final chunk (done: true)")


def _delta(chunk: dict[str, Any], calls_made: int) -> Delta:
    """One NDJSON line's message: text, thinking, and whole tool calls as fragments with fresh ids."""
    message = chunk.get("message") or {}
    if not isinstance(message, dict):
        raise ValueError("message is not an object")
    content, thinking = text(message.get("content"), "message.content"), text(message.get("thinking"), "message.thinking")
    raw_calls = message.get("tool_calls") or []
    if not isinstance(raw_calls, list):
        raise ValueError("message.tool_calls is not a list")
    calls = []
    for n, call in enumerate(raw_calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise ValueError(f"message.tool_calls[{n}] has no function.name")
        arguments = function.get("arguments") or {}
        if not isinstance(arguments, dict):
            raise ValueError(f"message.tool_calls[{n}].function.arguments is not an object")
        calls.append(ToolCallDelta(calls_made + n, f"call_{uuid.uuid4().hex[:24]}", function["name"], json.dumps(arguments)))
    return Delta(content, tuple(calls), thinking)


def _finish(chunk: dict[str, Any], calls_made: int) -> Finish:
    usage = None
    if "eval_count" in chunk or "prompt_eval_count" in chunk:
        usage = Usage(count(chunk.get("prompt_eval_count", 0), "prompt_eval_count"), count(chunk.get("eval_count", 0), "eval_count"))
    reason = text(chunk.get("done_reason"), "done_reason") or "stop"
    return Finish("tool_calls" if calls_made and reason == "stop" else reason, usage)
