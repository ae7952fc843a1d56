"""Ollama's native chat API: ``POST /api/chat``, streamed as NDJSON.

Each line is a JSON object with ``message.content``; the last has ``done: true``,
``done_reason`` and the token counts ``prompt_eval_count`` / ``eval_count``. An
error mid-stream arrives as a line ``{"error": "..."}``.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import AsyncGenerator
from typing import Any

import aiohttp
import orjson

from ..domain import (
    ChatParams,
    Delta,
    Embedded,
    Finish,
    Message,
    Opaque,
    ToolCallDelta,
    ToolResult,
    Usage,
    finish_reason,
)
from ..errors import InvalidRequest, UpstreamStreamError
from .checks import count, text
from .hosts import Host
from .http import MODEL_LIST_BYTES, HttpUpstream, body_lines, read_at_most
from .openai import openai_tool

__all__ = ["OllamaUpstream", "adaptations", "emulated_tools", "ollama_body", "shown_window"]

logger = logging.getLogger(__name__)

_NUM_CTX = re.compile(r"^num_ctx\s+(\d+)\s*$", re.MULTILINE)


def shown_window(show: Any) -> int | None:
    """The window ``POST /api/show`` tells for a model not loaded: its Modelfile's ``num_ctx`` when it sets one,
    else its trained length (``model_info``'s ``<architecture>.context_length``)."""
    if not isinstance(show, dict):
        return None
    parameters = show.get("parameters")
    found = _NUM_CTX.search(parameters) if isinstance(parameters, str) else None
    if found is not None:
        return int(found.group(1))
    info = show.get("model_info")
    if isinstance(info, dict):
        lengths = [v for k, v in info.items() if k.endswith(".context_length") and isinstance(v, int) and v > 0]
        if lengths:
            return min(lengths)
    return None


def ollama_body(model: str, params: ChatParams) -> dict[str, Any]:
    """The request in Ollama's shape (max_tokens -> options.num_predict, output -> format, images -> base64,
    reasoning -> think); Ollama's own fields (``passthrough["ollama"]``: options, keep_alive) as the client sent
    them. A forced tool choice, which Ollama lacks, is emulated (see ``emulated_tools``)."""
    own = params.own("ollama")
    options: dict[str, Any] = dict(own.get("options") or {})
    for key, value in (("temperature", params.temperature), ("top_p", params.top_p), ("top_k", params.top_k),
                       ("num_predict", params.max_tokens), ("seed", params.seed)):
        if value is not None:
            options[key] = value
    if params.stop:
        options["stop"] = list(params.stop)
    if params.context_window is not None and "num_ctx" not in options:  # one value per model: Ollama does not reload
        options["num_ctx"] = params.context_window
    for key in PENALTIES:
        if key in params.own("openai"):
            options[key] = params.own("openai")[key]
    tools, instruction = emulated_tools(params)
    messages = [_message(model, i, m) for i, m in enumerate(params.messages)]
    if instruction:
        messages.insert(_after_system(messages), {"role": "system", "content": instruction})
    body: dict[str, Any] = {"model": model, "messages": messages, "stream": True}
    if tools:
        body["tools"] = tools
    if params.output is not None:
        body["format"] = "json" if params.output.kind == "json" or params.output.schema is None else params.output.schema
    reasoning = params.reasoning
    # Ollama refuses think for a model that cannot think: it is sent only when the client switched it on or off
    if reasoning is not None and reasoning.enabled is not None:
        body["think"] = reasoning.effort if reasoning.effort and reasoning.enabled else reasoning.enabled
    if "keep_alive" in own:
        body["keep_alive"] = own["keep_alive"]
    if options:
        body["options"] = options
    return body


def emulated_tools(params: ChatParams) -> tuple[list[dict[str, Any]], str]:
    """The tools Ollama gets, and an instruction to add, for a tool choice Ollama cannot force: ``none`` sends no
    tools, a named tool is sent alone (and asked for), ``required`` keeps them all and asks for one."""
    choice = params.tool_choice
    tools = [openai_tool(tool) for tool in params.tools]
    if choice is None or choice.mode == "auto" or not tools:
        return tools, ""
    if choice.mode == "none":
        return [], ""
    if choice.mode == "tool":
        named = [t for t in tools if t["function"]["name"] == choice.name]
        if not named:
            raise InvalidRequest(f"tool_choice names {choice.name!r}, which is not one of the request's tools")
        return named, f"Answer by calling the tool {choice.name}."
    return tools, "Answer by calling one of the tools you are given."


def adaptations(params: ChatParams) -> tuple[str, ...]:
    """What an Ollama upstream does not take as asked (for the access line): emulations and dropped fields."""
    notes = [f"tool_choice={params.tool_choice.mode} emulated"] if (
        params.tool_choice is not None and params.tool_choice.mode != "auto" and params.tools) else []
    dropped = sorted(k for k in params.own("openai") if k not in IGNORED and k not in PENALTIES)
    if dropped:
        notes.append("dropped: " + ",".join(dropped))
    return tuple(notes)


PENALTIES = ("frequency_penalty", "presence_penalty")  # OpenAI's, which Ollama's options take as they are
# Request fields that do not change the answer, so an Ollama upstream goes without them and says nothing.
IGNORED = frozenset({"user", "metadata", "store", "service_tier", "parallel_tool_calls"})


def _after_system(messages: list[dict[str, Any]]) -> int:
    return next((i for i, m in enumerate(messages) if m["role"] != "system"), len(messages))


def _unsupported(model: str, field: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"{field} is not supported for model {model!r}, which Ollama serves: {why}; remove it")


def _message(model: str, i: int, message: Message) -> dict[str, Any]:
    role = "system" if message.role == "developer" else message.role
    images: list[str] = []
    for image in message.images:
        if not image.data:
            raise _unsupported(model, f"messages[{i}] image {image.url[:60]!r}", "Ollama takes images as data URLs only")
        images.append(image.data)
    opaque = next((p for p in message.parts if isinstance(p, Opaque)), None)
    if opaque is not None:
        raise _unsupported(model, f"messages[{i}] content part {opaque.type!r}", "Ollama takes text and images")
    item: dict[str, Any] = {"role": role, "content": message.content}
    if images:
        item["images"] = images
    for call in message.tool_calls:
        try:
            arguments = json.loads(call.arguments or "{}")
        except json.JSONDecodeError:
            raise InvalidRequest(f"messages[{i}].tool_calls: arguments are not JSON") from None
        item.setdefault("tool_calls", []).append({"function": {"name": call.name, "arguments": arguments}})
    result = next((p for p in message.parts if isinstance(p, ToolResult)), None)
    if result is not None:
        if result.name:
            item["tool_name"] = result.name
        if result.is_error:
            item["content"] = f"Error: {item['content']}" if item["content"] else "Error"
    return item


class OllamaUpstream(HttpUpstream):
    """Ollama's chat API; its health checks also learn each model's window (``windows``) for a model the gateway's
    ``[models]`` leaves out: what ``/api/ps`` says a loaded model runs with, else ``/api/show``'s (asked once a
    model), the smallest across hosts."""

    path = "/api/chat"
    models_path = "/api/tags"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._host_windows: dict[str, dict[str, int]] = {}  # host URL -> model -> window, from its last check
        self._shown: dict[tuple[str, str], int | None] = {}  # (host URL, model) -> /api/show's window

    def windows(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for per_host in self._host_windows.values():
            for model, window in per_host.items():
                found[model] = min(window, found.get(model, window))
        return found

    async def check(self, host: Host) -> bool:
        reachable = await super().check(host)
        if reachable:
            try:
                await self._learn_windows(host)
            except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError, AttributeError) as exc:
                logger.debug("upstream %r: host %s did not tell its models' windows: %s", self.name, host.url, exc)
        return reachable

    async def _small_json(self, host: Host, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        timeout = aiohttp.ClientTimeout(total=10.0, sock_connect=self._settings.connect_timeout_s)
        async with self._http.request(method, host.target + path, json=body, timeout=timeout) as response:
            payload, more = await read_at_most(response.content, MODEL_LIST_BYTES)
            if response.status != 200 or more:
                return None
        return json.loads(payload)

    async def _learn_windows(self, host: Host) -> None:
        ps = await self._small_json(host, "GET", "/api/ps")
        loaded = {
            name: entry["context_length"] for entry in (ps or {}).get("models", ()) if isinstance(entry, dict)
            for name in (entry.get("name"), entry.get("model"))
            if isinstance(name, str) and isinstance(entry.get("context_length"), int) and entry["context_length"] > 0
        }
        windows: dict[str, int] = {}
        for model in self._settings.models:
            if model in loaded:
                windows[model] = loaded[model]
                continue
            key = (host.url, model)
            if key not in self._shown:  # a model's Modelfile and trained length change only when it is pulled again
                self._shown[key] = shown_window(await self._small_json(host, "POST", "/api/show", {"model": model}))
            shown = self._shown[key]
            if shown is not None:
                windows[model] = shown
        self._host_windows[host.url] = windows

    def request_body(self, model: str, params: ChatParams) -> dict[str, Any]:
        return ollama_body(model, params)

    def adaptations(self, params: ChatParams) -> tuple[str, ...]:
        return adaptations(params)

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
    reason = finish_reason(text(chunk.get("done_reason"), "done_reason") or "stop")
    return Finish("tool_calls" if calls_made and reason == "stop" else reason, usage)
