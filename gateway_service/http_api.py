"""OpenAI-compatible HTTP: /v1/chat/completions (SSE or JSON), /v1/models, health.

The official ``openai`` SDK works against it unchanged. The routing decision is
in the response's ``model`` field and in ``x-route-*`` headers. Errors use
OpenAI's error JSON; an error after the first token is an SSE error event and
the stream ends without ``data: [DONE]``, so no client mistakes it for success.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from service_core.auth import bearer_matches, bearer_token

from .chat import ChatService
from .domain import ChatParams, Delta, Finish, Message, RouteDecision
from .errors import GatewayError, InvalidRequest, TooLarge
from .stream import ChatStream

__all__ = ["build_http_app", "error_body"]

logger = logging.getLogger(__name__)


class _ContentPart(BaseModel):
    type: str
    text: str | None = None


class _Message(BaseModel):
    role: str
    content: str | list[_ContentPart] | None = None

    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        if any(part.type != "text" for part in self.content):
            raise InvalidRequest("only text content parts are supported")
        return "".join(part.text or "" for part in self.content)


class _StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The fields of OpenAI's request that the gateway honours; others are ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str
    messages: list[_Message] = Field(min_length=1)
    stream: bool = False
    stream_options: _StreamOptions | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    n: Literal[1] | None = None

    def params(self) -> ChatParams:
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        return ChatParams(
            messages=tuple(Message(m.role, m.text()) for m in self.messages),
            temperature=self.temperature,
            top_p=self.top_p,
            max_tokens=self.max_completion_tokens or self.max_tokens,
            stop=stop,
            seed=self.seed,
        )


def error_body(message: str, error_type: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}


def _error_response(exc: GatewayError, request_id: str) -> JSONResponse:
    headers = {"x-request-id": request_id}
    if exc.retry_after:
        headers["retry-after"] = exc.retry_after
    return JSONResponse(error_body(str(exc), exc.error_type, exc.code), status_code=exc.http_status, headers=headers)


def _route_headers(route: RouteDecision, request_id: str) -> dict[str, str]:
    return {
        "x-request-id": request_id,
        "x-route-model": route.model,
        "x-route-routed": str(route.routed).lower(),
        "x-route-score": f"{route.score:.6f}",
        "x-route-threshold": f"{route.threshold:.6f}",
        "x-route-degraded": str(route.degraded).lower(),
        "x-route-fallback": str(route.fallback).lower(),
    }


def _sse(data: Any) -> bytes:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _unauthorized(keys: tuple[str, ...], request: Request) -> JSONResponse | None:
    if not keys or bearer_matches(request.headers.get("authorization"), keys):
        return None
    return JSONResponse(
        error_body("missing or invalid API key: send 'Authorization: Bearer <key>' (see auth.api_keys)",
                   "invalid_request_error", "invalid_api_key"),
        status_code=401,
    )


class _Completions:
    def __init__(self, chat: ChatService, keys: tuple[str, ...]) -> None:
        self._chat = chat
        self._keys = keys

    async def handle(self, request: Request) -> Response:
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        refused = _unauthorized(self._keys, request)
        if refused is not None:
            self._chat.metrics.requests.labels(api="http", outcome="unauthorized").inc()
            return refused
        try:
            limit = self._chat.limits.max_body_bytes
            declared = request.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > limit:
                raise TooLarge(f"the request body is {declared} bytes, more than limits.max_body_bytes={limit}")
            raw = await request.body()
            if len(raw) > limit:
                raise TooLarge(f"the request body is {len(raw)} bytes, more than limits.max_body_bytes={limit}")
            try:
                body = ChatCompletionRequest.model_validate_json(raw)
            except ValidationError as exc:
                raise InvalidRequest(_describe(exc)) from None
            stream = await self._chat.open(body.model, body.params(), request_id, bearer_token(request.headers.get("authorization")))
        except GatewayError as exc:
            self._chat.metrics.requests.labels(api="http", outcome=type(exc).__name__).inc()
            return _error_response(exc, request_id)
        self._chat.metrics.requests.labels(api="http", outcome="started").inc()
        headers = _route_headers(stream.route, request_id)
        completion_id = f"chatcmpl-{request_id}"
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            events = self._sse_events(stream, completion_id, include_usage)
            return StreamingResponse(events, media_type="text/event-stream", headers={**headers, "cache-control": "no-cache"})
        return await self._whole(stream, completion_id, headers, request_id)

    async def _sse_events(self, stream: ChatStream, completion_id: str, include_usage: bool) -> AsyncIterator[bytes]:
        created = int(time.time())
        base = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": stream.route.model}
        extra = {"usage": None} if include_usage else {}

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return _sse({**base, "choices": [choice], **extra})

        async with stream:
            yield chunk({"role": "assistant", "content": ""})
            try:
                async for event in stream.events():
                    if isinstance(event, Delta):
                        yield chunk({"content": event.text})
                    else:
                        yield chunk({}, event.reason)
                        if include_usage:
                            yield _sse({**base, "choices": [], "usage": _usage(event)})
                        yield b"data: [DONE]\n\n"
            except GatewayError as exc:
                logger.warning("stream %s broke after it started: %s", completion_id, exc)
                yield _sse(error_body(str(exc), exc.error_type, exc.code))

    async def _whole(self, stream: ChatStream, completion_id: str, headers: dict[str, str], request_id: str) -> Response:
        parts: list[str] = []
        finish: Finish | None = None
        async with stream:
            try:
                async for event in stream.events():
                    if isinstance(event, Delta):
                        parts.append(event.text)
                    else:
                        finish = event
            except GatewayError as exc:
                return _error_response(exc, request_id)
        assert finish is not None  # upstreams end with exactly one Finish
        return JSONResponse(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": stream.route.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(parts), "refusal": None},
                        "logprobs": None,
                        "finish_reason": finish.reason,
                    }
                ],
                "usage": _usage(finish),
            },
            headers=headers,
        )


def _usage(finish: Finish) -> dict[str, int]:
    if finish.usage is None:
        return {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    u = finish.usage
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "total_tokens": u.total_tokens}


def _describe(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    if first["type"] == "json_invalid":
        return f"the request body is not valid JSON: {first['msg']}"
    return f"invalid request: {where}: {first['msg']}" + (f" ({len(exc.errors())} errors)" if len(exc.errors()) > 1 else "")


def build_http_app(chat: ChatService, ready: Any, keys: tuple[str, ...] = ()) -> Starlette:
    """``ready()`` is false while draining: /readyz fails first, as Kubernetes expects."""

    async def models(request: Request) -> JSONResponse:
        refused = _unauthorized(keys, request)
        if refused is not None:
            return refused
        data = [{"id": i, "object": "model", "created": 0, "owned_by": owner} for i, owner, _ in chat.models()]
        return JSONResponse({"object": "list", "data": data})

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(chat.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> JSONResponse:
        if ready():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "draining"}, status_code=503)

    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(error_body(f"no route for {request.method} {request.url.path}", "invalid_request_error"), status_code=404)

    async def method_not_allowed(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(error_body(f"{request.method} is not allowed on {request.url.path}", "invalid_request_error"), status_code=405)

    return Starlette(
        routes=[
            Route("/v1/chat/completions", _Completions(chat, keys).handle, methods=["POST"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
        ],
        exception_handlers={404: not_found, 405: method_not_allowed},
    )
