"""Ollama's native chat API: ``POST /api/chat``, streamed as NDJSON.

Each line is a JSON object with ``message.content``; the last has ``done: true``,
``done_reason`` and the token counts ``prompt_eval_count`` / ``eval_count``. An
error mid-stream arrives as a line ``{"error": "..."}``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

from ..domain import ChatParams, Delta, Finish, Usage
from ..errors import UpstreamStreamError
from .hosts import Host
from .http import HttpUpstream

__all__ = ["OllamaUpstream", "ollama_body"]


def ollama_body(model: str, params: ChatParams) -> dict[str, Any]:
    """The OpenAI-style parameters in Ollama's shape (max_tokens -> options.num_predict)."""
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
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": m.role, "content": m.content} for m in params.messages],
        "stream": True,
    }
    if options:
        body["options"] = options
    return body


class OllamaUpstream(HttpUpstream):
    path = "/api/chat"
    models_path = "/api/tags"

    def request_body(self, model: str, params: ChatParams) -> dict[str, Any]:
        return ollama_body(model, params)

    def model_names(self, payload: Any) -> list[str]:
        return [name for entry in payload["models"] for name in (entry.get("name"), entry.get("model")) if name]

    async def events(self, host: Host, model: str, body: dict[str, Any]) -> AsyncGenerator[Delta | Finish, None]:
        where = self.where(host, model)
        async with self.post(host, model, body) as response:
            lines = response.aiter_lines()
            async for line in lines:
                if not line.strip():
                    continue
                try:
                    chunk = json.loads(line)
                    if "error" in chunk:
                        raise UpstreamStreamError(f"{where} failed mid-stream: {self.redact(str(chunk['error']))}")
                    content = chunk.get("message", {}).get("content", "")
                    done = bool(chunk["done"])
                except (json.JSONDecodeError, KeyError, AttributeError, TypeError) as exc:
                    raise UpstreamStreamError(f"{where} sent a malformed chunk: {self.redact(line[:200])!r}") from exc
                if content:
                    yield Delta(content)
                if done:
                    usage = None
                    if "eval_count" in chunk or "prompt_eval_count" in chunk:
                        usage = Usage(int(chunk.get("prompt_eval_count", 0)), int(chunk.get("eval_count", 0)))
                    yield Finish(chunk.get("done_reason") or "stop", usage)
                    await self.finish_reading(lines)
                    return
        raise UpstreamStreamError(f"{where} ended the stream before its final chunk (done: true)")
