"""Ollama's own API on the gateway: /api/chat, /api/generate, /api/embed, /api/tags, /api/show, /api/ps, /api/version.

So ``OLLAMA_HOST=gateway:8000``, the ``ollama`` Python client and other Ollama clients
work unchanged, with the same routing (``model: "router"``, ``router-mf-50``, a concrete
model). Requests become the gateway's own chat request (OpenAI semantics: ``format`` ->
``response_format``, ``options.num_predict`` -> ``max_tokens``, images -> image parts,
tool calls -> OpenAI's with ids, ``tools`` as they are; the rest of ``options``,
``keep_alive`` and ``think`` go to Ollama upstreams as they are); answers are Ollama's
NDJSON stream or single object (whole tool calls, ``thinking``), and errors Ollama's
``{"error": ...}``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncIterator
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from pydantic import BaseModel, ConfigDict
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from service_core.auth import bearer_matches, bearer_token
from service_core.request_ids import accept_request_id

from .chat import ChatService
from .domain import ChatParams, Delta, Message
from .errors import GatewayError, InvalidRequest, ModelNotFound, UpstreamStreamError, internal_error
from .http_stream import EventStream
from .request_body import UNAUTHORIZED, read_request
from .stream import ChatStream, log_refusal

__all__ = ["OllamaApi"]

logger = logging.getLogger(__name__)

# options with an OpenAI equivalent; the others (num_ctx, ...) go to Ollama upstreams as they are
MAPPED_OPTIONS = {"temperature": "temperature", "top_p": "top_p", "num_predict": "max_tokens", "seed": "seed"}


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: str
    content: str = ""
    images: list[str] | None = None
    tool_calls: list[dict[str, Any]] | None = None  # Ollama's whole calls: {"function": {"name", "arguments": {...}}}
    tool_name: str | None = None  # on a tool answer: which tool it answers
    thinking: str | None = None  # an earlier answer's reasoning, sent back: not passed on (as Ollama does)


class _Common(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    stream: bool = True
    format: str | dict[str, Any] | None = None
    options: dict[str, Any] | None = None
    keep_alive: str | int | float | None = None
    tools: list[Any] | None = None
    think: bool | str | None = None

    def settings(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(ChatParams keyword arguments, extra fields) from options, format and keep_alive."""
        options = dict(self.options or {})
        known: dict[str, Any] = {MAPPED_OPTIONS[k]: options.pop(k) for k in list(options) if k in MAPPED_OPTIONS}
        if "stop" in options:
            stop = options.pop("stop")
            known["stop"] = (stop,) if isinstance(stop, str) else tuple(stop)
        extra: dict[str, Any] = {}
        if options:
            extra["options"] = options
        if self.keep_alive is not None:
            extra["keep_alive"] = self.keep_alive
        if self.tools:
            extra["tools"] = self.tools  # Ollama's tools are OpenAI's function tools
        if self.think is not None:
            extra["think"] = self.think
        if self.format == "json":
            extra["response_format"] = {"type": "json_object"}
        elif isinstance(self.format, dict):
            extra["response_format"] = {"type": "json_schema", "json_schema": {"name": "format", "schema": self.format}}
        elif self.format:
            raise InvalidRequest(f"format {self.format!r}: give \"json\" or a JSON schema")
        return known, extra


class _EmbedRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    input: str | list[str] = ""
    truncate: bool | None = None
    dimensions: int | None = None
    options: dict[str, Any] | None = None
    keep_alive: str | int | float | None = None


class _LegacyEmbedRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    prompt: str = ""
    options: dict[str, Any] | None = None
    keep_alive: str | int | float | None = None


class _ShowRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # verbose, and whatever newer clients add

    model: str | None = None
    name: str | None = None  # older clients' name for it


class _ChatRequest(_Common):
    messages: list[_Message] = []


class _GenerateRequest(_Common):
    prompt: str = ""
    system: str | None = None
    images: list[str] | None = None


def _image_url(data: str) -> str:
    """An Ollama image (base64, no type) as a data URL; the type from the bytes' signature."""
    head = base64.b64decode(data[:16] + "=" * (-len(data[:16]) % 4), validate=False)
    kind = "png" if head.startswith(b"\x89PNG") else "gif" if head.startswith(b"GIF8") else \
        "webp" if head[8:12] == b"WEBP" else "jpeg"
    return f"data:image/{kind};base64,{data}"


def _params(messages: list[_Message], common: _Common) -> ChatParams:
    known, extra = common.settings()
    raw: list[dict[str, Any]] = []
    unanswered: list[tuple[str, str]] = []  # (id, tool name) of the calls made so far and not yet answered
    calls_made = 0
    for i, m in enumerate(messages):
        item: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.images:
            parts: list[dict[str, Any]] = [{"type": "text", "text": m.content}]
            parts += [{"type": "image_url", "image_url": {"url": _image_url(image)}} for image in m.images]
            item["content"] = parts
        if m.tool_calls:  # OpenAI's shape: an id per call, arguments as a JSON string
            item["tool_calls"] = []
            for call in m.tool_calls:
                function = call.get("function") if isinstance(call, dict) else None
                if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                    raise InvalidRequest(f"messages[{i}].tool_calls: each needs function.name")
                call_id = f"call_{calls_made}"
                calls_made += 1
                unanswered.append((call_id, function["name"]))
                item["tool_calls"].append({"id": call_id, "type": "function", "function": {
                    "name": function["name"], "arguments": json.dumps(function.get("arguments") or {})}})
        if m.role == "tool" and unanswered:  # answers the call of that tool, else the oldest open one
            match = next((c for c in unanswered if c[1] == m.tool_name), unanswered[0])
            unanswered.remove(match)
            item["tool_call_id"] = match[0]
            item["name"] = m.tool_name or match[1]
        raw.append(item)
    return ChatParams(
        messages=tuple(Message(m.role, m.content) for m in messages), raw_messages=tuple(raw), extra=extra, **known
    )


def _is_load(body: _Common) -> bool:
    """Nothing to answer: no messages, or an empty prompt without images (Ollama loads the model, or unloads it)."""
    if isinstance(body, _ChatRequest):
        return not body.messages
    return isinstance(body, _GenerateRequest) and not body.prompt and not body.images and not body.system


def _gather(calls: dict[int, dict[str, str]], fragment: dict[str, Any]) -> None:
    """Add one of OpenAI's streamed tool-call fragments (an index, the name once, argument pieces)."""
    entry = calls.setdefault(int(fragment.get("index") or 0), {"name": "", "arguments": ""})
    function = fragment.get("function") or {}
    entry["name"] = function.get("name") or entry["name"]
    entry["arguments"] += function.get("arguments") or ""


def _whole_call(call: dict[str, str]) -> dict[str, Any]:
    try:
        arguments = json.loads(call["arguments"] or "{}")
    except json.JSONDecodeError:
        raise UpstreamStreamError(
            f"the model called {call['name']!r} with arguments that are not JSON: {call['arguments'][:200]!r}"
        ) from None
    return {"function": {"name": call["name"], "arguments": arguments}}


def _details(owner: str) -> dict[str, Any]:
    """A model's ``details`` as Ollama lists them: the family is the upstream serving it (or "router")."""
    return {"parent_model": "", "format": "", "family": owner, "families": [owner], "parameter_size": "",
            "quantization_level": ""}


def _stamp() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e9):09d}Z"


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def _refused(api: str, request_id: str, requested: str, exc: GatewayError, started: float) -> JSONResponse:
    """An error before any answer: Ollama's ``{"error": ...}`` with the error's status, and the access line."""
    log_refusal(api, request_id, requested, exc.http_status, type(exc).__name__, str(exc), started)
    return JSONResponse({"error": str(exc)}, status_code=exc.http_status, headers={"x-request-id": request_id})


def _client_gone(api: str, request_id: str, requested: str, started: float) -> Response:
    log_refusal(api, request_id, requested, 499, "client_disconnected", "the client went away while sending its body", started)
    return Response(status_code=400)  # nobody reads it


def _crashed(api: str, request_id: str, requested: str, started: float) -> JSONResponse:
    message = internal_error(logger, f"request {request_id}")
    log_refusal(api, request_id, requested, 500, "internal_error", message, started)
    return JSONResponse({"error": message}, status_code=500, headers={"x-request-id": request_id})


class OllamaApi:
    def __init__(self, chat: ChatService, keys: tuple[str, ...]) -> None:
        self._chat = chat
        self._keys = keys

    async def chat(self, request: Request) -> Response:
        return await self._answer(request, _ChatRequest, "message")

    async def generate(self, request: Request) -> Response:
        return await self._answer(request, _GenerateRequest, "response")

    async def tags(self, request: Request) -> Response:
        if self._keys and not bearer_matches(request.headers.get("authorization"), self._keys):
            return JSONResponse({"error": UNAUTHORIZED}, status_code=401)
        models = [
            {"name": name, "model": name, "modified_at": "2026-01-01T00:00:00Z", "size": 0, "digest": "",
             "details": _details(owner)}
            for name, owner, _ in self._chat.models()
        ]
        return JSONResponse({"models": models})

    async def embed(self, request: Request) -> Response:
        """Ollama's ``POST /api/embed``: ``input`` (a string or strings) -> ``embeddings``."""
        return await self._embed(request, _EmbedRequest)

    async def embeddings(self, request: Request) -> Response:
        """Ollama's older ``POST /api/embeddings``: one ``prompt`` -> one ``embedding``."""
        return await self._embed(request, _LegacyEmbedRequest)

    async def _embed(self, request: Request, kind: type[_EmbedRequest] | type[_LegacyEmbedRequest]) -> Response:
        request_id, _ = accept_request_id(request.headers.get("x-request-id"))
        started = time.perf_counter()
        api, requested = f"ollama{request.url.path}", ""
        try:
            body = await read_request(request, kind, self._keys, self._chat.limits.max_body_bytes)
            requested = body.model
            given = body.prompt if isinstance(body, _LegacyEmbedRequest) else body.input
            options = body.model_dump(exclude={"model", "input", "prompt"}, exclude_none=True)
            embedded = await self._chat.embeddings.embed(body.model, given, options)
        except GatewayError as exc:
            return _refused(api, request_id, requested, exc, started)
        except ClientDisconnect:
            return _client_gone(api, request_id, requested, started)
        except Exception:  # noqa: BLE001 - any bug: a 500 with an id that is also in the log, never a traceback
            return _crashed(api, request_id, requested, started)
        log_refusal(api, request_id, requested, 200, "ok", "", started)
        headers = {"x-request-id": request_id}
        if isinstance(body, _LegacyEmbedRequest):
            return JSONResponse({"embedding": embedded.vectors[0]}, headers=headers)
        answer: dict[str, Any] = {
            "model": body.model, "embeddings": embedded.vectors,
            "total_duration": int((time.perf_counter() - started) * 1e9), "load_duration": 0,
        }
        if embedded.prompt_tokens is not None:
            answer["prompt_eval_count"] = embedded.prompt_tokens
        return JSONResponse(answer, headers=headers)

    async def show(self, request: Request) -> Response:
        """Enough for Ollama clients that ask before they chat (the ollama CLI, Open WebUI): the model's
        family (its upstream) and capabilities; the gateway has no weights, template or parameters to show."""
        try:
            body = await read_request(request, _ShowRequest, self._keys, self._chat.limits.max_body_bytes)
            name = body.model or body.name or ""
            can = self._chat.capabilities(name)
        except ModelNotFound:
            return JSONResponse({"error": f"model '{name}' not found"}, status_code=404)
        except GatewayError as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.http_status)
        except ClientDisconnect:
            return Response(status_code=400)  # nobody reads it
        owner = next((o for n, o, _ in self._chat.models() if n == name), "router")
        return JSONResponse({
            "modelfile": f"# {name}: served through the routestack gateway\n", "parameters": "", "template": "",
            "details": _details(owner), "model_info": {}, "modified_at": "2026-01-01T00:00:00Z",
            "capabilities": ["completion", *(c for c in ("tools", "vision") if c in can)],
        })

    async def ps(self, request: Request) -> Response:
        """Ollama lists the models loaded in memory; the gateway loads none (its upstreams do)."""
        if self._keys and not bearer_matches(request.headers.get("authorization"), self._keys):
            return JSONResponse({"error": UNAUTHORIZED}, status_code=401)
        return JSONResponse({"models": []})

    async def version(self, request: Request) -> Response:
        try:
            ours = version("routestack")
        except PackageNotFoundError:  # run from a source tree
            ours = "0.0.0"
        return JSONResponse({"version": ours})

    async def _answer(self, request: Request, kind: type[_Common], field: str) -> Response:
        request_id, _ = accept_request_id(request.headers.get("x-request-id"))
        started = time.perf_counter()
        requested = ""
        api = f"ollama{request.url.path}"
        try:
            body = await read_request(request, kind, self._keys, self._chat.limits.max_body_bytes)
            requested = body.model
            if _is_load(body):  # Ollama's "load this model" (or unload): the ollama CLI sends one before a chat
                self._chat.catalog.resolve(body.model)  # an unknown name is still a 404
                reason = "unload" if body.keep_alive in (0, "0", "0s") else "load"
                done: dict[str, Any] = {"model": body.model, "created_at": _stamp(), "done": True, "done_reason": reason}
                done.update({"message": {"role": "assistant", "content": ""}} if field == "message" else {"response": ""})
                return JSONResponse(done, headers={"x-request-id": request_id})
            if isinstance(body, _ChatRequest):
                params = _params(body.messages, body)
            else:
                assert isinstance(body, _GenerateRequest)
                messages = ([_Message(role="system", content=body.system)] if body.system else []) + [
                    _Message(role="user", content=body.prompt, images=body.images)
                ]
                params = _params(messages, body)
            stream = await self._chat.open(body.model, params, request_id, bearer_token(request.headers.get("authorization")))
        except GatewayError as exc:
            return _refused(api, request_id, requested, exc, started)
        except ClientDisconnect:
            return _client_gone(api, request_id, requested, started)
        except Exception:  # noqa: BLE001 - any bug: a 500 with an id that is also in the log, never a traceback
            return _crashed(api, request_id, requested, started)
        headers = {"x-request-id": request_id, "x-route-model": stream.route.model}
        if body.stream:
            return EventStream(self._lines(stream, field, started), media_type="application/x-ndjson", headers=headers)
        whole: dict[str, Any] = {}
        text: list[str] = []
        thinking: list[str] = []
        calls: list[dict[str, Any]] = []
        try:
            async for item in self._events(stream, field, started, whole=True):
                if item["done"]:
                    whole = item
                    continue
                part = item["message"] if field == "message" else item
                text.append(part["content"] if field == "message" else part["response"])
                thinking.append(part.get("thinking", ""))
                calls.extend(part.get("tool_calls", ()))
        except GatewayError as exc:  # nothing was sent yet: the error's own status
            return JSONResponse({"error": str(exc)}, status_code=exc.http_status, headers=headers)
        answer: dict[str, Any] = {"role": "assistant", "content": "".join(text)} if field == "message" else {"response": "".join(text)}
        if any(thinking):
            answer["thinking"] = "".join(thinking)
        if calls:
            answer["tool_calls"] = calls
        if field == "message":
            whole["message"] = answer
        else:
            whole.update(answer)
        return JSONResponse(whole, headers=headers)

    async def _lines(self, stream: ChatStream, field: str, started: float) -> AsyncIterator[bytes]:
        async for item in self._events(stream, field, started):
            yield _line(item)

    async def _events(
        self, stream: ChatStream, field: str, started: float, *, whole: bool = False
    ) -> AsyncIterator[dict[str, Any]]:
        """Ollama's chunks: text, then the final one with the counts. A failure mid-stream is a last
        chunk ``{"error": ...}`` (Ollama's way), or, for a ``whole`` answer, the GatewayError itself."""
        model = stream.route.model
        calls: dict[int, dict[str, str]] = {}  # OpenAI's call fragments by index, assembled into whole calls

        def piece(text: str, thinking: str = "", tool_calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
            if field == "message":
                part: dict[str, Any] = {"role": "assistant", "content": text}
                item = {"model": model, "created_at": _stamp(), "message": part, "done": False}
            else:
                part = item = {"model": model, "created_at": _stamp(), "response": text, "done": False}
            if thinking:
                part["thinking"] = thinking
            if tool_calls:
                part["tool_calls"] = tool_calls
            return item

        async with stream:
            try:
                async for event in stream.events():
                    if isinstance(event, Delta):
                        for fragment in event.tool_calls:
                            _gather(calls, fragment)
                        if event.text or event.reasoning:
                            yield piece(event.text, event.reasoning)
                        continue
                    if calls:  # Ollama sends each call whole, arguments as an object, before the last chunk
                        yield piece("", tool_calls=[_whole_call(calls[i]) for i in sorted(calls)])
                    final = piece("")
                    final.update(done=True, done_reason="stop" if event.reason == "tool_calls" else event.reason,
                                 total_duration=int((time.perf_counter() - started) * 1e9), load_duration=0)
                    if event.usage is not None:  # unknown counts are left out, never 0
                        final.update(prompt_eval_count=event.usage.prompt_tokens, eval_count=event.usage.completion_tokens)
                    yield final
            except GatewayError as exc:
                if whole:
                    raise
                logger.warning("stream %s broke after it started: %s", stream.opened.request_id, exc)
                yield {"error": str(exc)}
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - any bug: an error chunk with an id that is also in the log
                yield {"error": internal_error(logger, f"stream {stream.opened.request_id}")}
