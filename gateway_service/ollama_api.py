"""Ollama's own API on the gateway: /api/chat, /api/generate, /api/tags, /api/version.

So ``OLLAMA_HOST=gateway:8000``, the ``ollama`` Python client and other Ollama clients
work unchanged, with the same routing (``model: "router"``, ``router-mf-50``, a concrete
model). Requests become the gateway's own chat request (OpenAI semantics: ``format`` ->
``response_format``, ``options.num_predict`` -> ``max_tokens``, images -> image parts;
the rest of ``options`` and ``keep_alive`` go to Ollama upstreams as they are); answers
are Ollama's NDJSON stream or single object, and errors Ollama's ``{"error": ...}``.
Not yet: ``tools`` and ``think`` here (a 400 says so; /v1/chat/completions takes tools).
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
from starlette.responses import JSONResponse, Response, StreamingResponse

from service_core.auth import bearer_matches, bearer_token
from service_core.request_ids import accept_request_id

from .chat import ChatService
from .domain import ChatParams, Delta, Message
from .errors import GatewayError, InvalidRequest, internal_error
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
        if self.tools:
            raise InvalidRequest("tools are not taken on this gateway's /api/chat yet: use /v1/chat/completions")
        if self.think:
            raise InvalidRequest("think is not taken on this gateway's Ollama API yet")
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
        if self.format == "json":
            extra["response_format"] = {"type": "json_object"}
        elif isinstance(self.format, dict):
            extra["response_format"] = {"type": "json_schema", "json_schema": {"name": "format", "schema": self.format}}
        elif self.format:
            raise InvalidRequest(f"format {self.format!r}: give \"json\" or a JSON schema")
        return known, extra


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
    for m in messages:
        if m.images:
            parts: list[dict[str, Any]] = [{"type": "text", "text": m.content}]
            parts += [{"type": "image_url", "image_url": {"url": _image_url(image)}} for image in m.images]
            raw.append({"role": m.role, "content": parts})
        else:
            raw.append({"role": m.role, "content": m.content})
    return ChatParams(
        messages=tuple(Message(m.role, m.content) for m in messages), raw_messages=tuple(raw), extra=extra, **known
    )


def _stamp() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e9):09d}Z"


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


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
             "details": {"parent_model": "", "format": "", "family": owner, "families": [owner],
                         "parameter_size": "", "quantization_level": ""}}
            for name, owner, _ in self._chat.models()
        ]
        return JSONResponse({"models": models})

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
            log_refusal(api, request_id, requested, exc.http_status, type(exc).__name__, str(exc), started)
            return JSONResponse({"error": str(exc)}, status_code=exc.http_status, headers={"x-request-id": request_id})
        except ClientDisconnect:
            log_refusal(api, request_id, requested, 499, "client_disconnected", "the client went away while sending its body", started)
            return Response(status_code=400)  # nobody reads it
        except Exception:  # noqa: BLE001 - any bug: a 500 with an id that is also in the log, never a traceback
            message = internal_error(logger, f"request {request_id}")
            log_refusal(api, request_id, requested, 500, "internal_error", message, started)
            return JSONResponse({"error": message}, status_code=500, headers={"x-request-id": request_id})
        headers = {"x-request-id": request_id, "x-route-model": stream.route.model}
        if body.stream:
            return StreamingResponse(self._lines(stream, field, started), media_type="application/x-ndjson", headers=headers)
        whole: dict[str, Any] = {}
        text: list[str] = []
        try:
            async for item in self._events(stream, field, started, whole=True):
                if item["done"]:
                    whole = item
                else:
                    text.append(item["message"]["content"] if field == "message" else item["response"])
        except GatewayError as exc:  # nothing was sent yet: the error's own status
            return JSONResponse({"error": str(exc)}, status_code=exc.http_status, headers=headers)
        if field == "message":
            whole["message"] = {"role": "assistant", "content": "".join(text)}
        else:
            whole["response"] = "".join(text)
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

        def piece(text: str) -> dict[str, Any]:
            content: Any = {"role": "assistant", "content": text} if field == "message" else text
            return {"model": model, "created_at": _stamp(), field: content, "done": False}

        async with stream:
            try:
                async for event in stream.events():
                    if isinstance(event, Delta):
                        if event.text:
                            yield piece(event.text)
                        continue
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
