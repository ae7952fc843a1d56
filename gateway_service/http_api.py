"""OpenAI-compatible HTTP: /v1/chat/completions (SSE or JSON), /v1/models, health.

The official ``openai`` SDK works against it unchanged. The routing decision is
in the response's ``model`` field and in ``x-route-*`` headers. Errors use
OpenAI's error JSON; an error after the first token is an SSE error event and
the stream ends without ``data: [DONE]``, so no client mistakes it for success.
Every request leaves one JSON access line, whatever its outcome.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from service_core.auth import bearer_matches, bearer_token
from service_core.request_ids import accept_request_id

from .chat import ChatService
from .domain import Delta, Finish
from .embeddings import as_base64
from .errors import GatewayError, internal_error
from .http_stream import EventStream
from .ollama_api import OllamaApi
from .openai_schema import (
    ChatCompletionRequest,
    ChunkWriter,
    ToolCalls,
    error_body,
    message_body,
    route_headers,
    sse,
    usage,
)
from .request_body import UNAUTHORIZED, read_request
from .stream import ChatStream, log_refusal

__all__ = ["build_http_app"]

logger = logging.getLogger(__name__)

class _Completions:
    def __init__(self, chat: ChatService, keys: tuple[str, ...]) -> None:
        self._chat = chat
        self._keys = keys

    async def handle(self, request: Request) -> Response:
        request_id, replaced = accept_request_id(request.headers.get("x-request-id"))
        ids = {"x-request-id": request_id} | ({"x-request-id-note": replaced} if replaced else {})
        started = time.perf_counter()
        requested = ""
        try:
            body = await read_request(request, ChatCompletionRequest, self._keys, self._chat.limits.max_body_bytes)
            requested = body.model
            stream = await self._chat.open(body.model, body.params(), request_id, bearer_token(request.headers.get("authorization")))
        except GatewayError as exc:
            return self._refuse(exc, ids, requested, started)
        except ClientDisconnect:
            self._log(request_id, requested, started, 499, "client_disconnected", "the client went away while sending its body")
            return Response(status_code=400, headers=ids)  # nobody reads it; uvicorn drops it
        except Exception:  # noqa: BLE001 - any bug: a 500 with an id that is also in the log, never a traceback
            return self._internal_error(ids, requested, started)
        self._chat.metrics.requests.labels(api="http", outcome="started").inc()
        headers = {**ids, **route_headers(stream.route)}
        completion_id = f"chatcmpl-{request_id}"
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            events = self._sse_events(stream, completion_id, include_usage)
            return EventStream(events, media_type="text/event-stream", headers={**headers, "cache-control": "no-cache"})
        return await self._whole(stream, completion_id, headers, ids)

    def _log(self, request_id: str, requested: str, started: float, status: int, outcome: str, message: str) -> None:
        self._chat.metrics.requests.labels(api="http", outcome=outcome).inc()
        log_refusal("http", request_id, requested, status, outcome, message, started)

    def _refuse(self, exc: GatewayError, ids: dict[str, str], requested: str, started: float) -> JSONResponse:
        """An error answer before the stream started: OpenAI's error JSON, and one access line."""
        self._log(ids["x-request-id"], requested, started, exc.http_status, type(exc).__name__, str(exc))
        headers = dict(ids) | (route_headers(exc.route) if exc.route is not None else {})
        if exc.retry_after:
            headers["retry-after"] = exc.retry_after
        return JSONResponse(error_body(str(exc), exc.error_type, exc.code), status_code=exc.http_status, headers=headers)

    def _internal_error(self, ids: dict[str, str], requested: str, started: float) -> JSONResponse:
        message = internal_error(logger, f"request {ids['x-request-id']}")
        self._log(ids["x-request-id"], requested, started, 500, "internal_error", message)
        return JSONResponse(error_body(message, "server_error"), status_code=500, headers=ids)

    async def _sse_events(self, stream: ChatStream, completion_id: str, include_usage: bool) -> AsyncIterator[bytes]:
        created = int(time.time())
        base = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": stream.route.model}
        writer = ChunkWriter(base, include_usage)

        async with stream:
            # Events that are ready together go out in one write (one syscall, one packet): the role chunk
            # with the first event (already in hand once the stream is open), the finish with usage and [DONE].
            opening = writer.chunk({"role": "assistant", "content": ""})
            try:
                async for event in stream.events():
                    if isinstance(event, Delta):
                        yield opening + writer.delta(event)
                    else:
                        end = writer.chunk({}, event.reason)
                        if include_usage:
                            end += sse({**base, "choices": [], "usage": usage(event)})
                        yield opening + end + b"data: [DONE]\n\n"
                    opening = b""
            except GatewayError as exc:
                logger.warning("stream %s broke after it started: %s", completion_id, exc)
                yield opening + sse(error_body(str(exc), exc.error_type, exc.code))
            except asyncio.CancelledError:
                logger.info("stream %s cancelled (client gone, or shutdown grace over)", completion_id)
                raise
            except Exception:  # noqa: BLE001 - any bug: an error event with an id that is also in the log
                yield opening + sse(error_body(internal_error(logger, f"stream {completion_id}"), "server_error"))

    async def _whole(
        self, stream: ChatStream, completion_id: str, headers: dict[str, str], ids: dict[str, str]
    ) -> Response:
        parts: list[str] = []
        reasoning: list[str] = []
        calls = ToolCalls()
        finish: Finish | None = None
        async with stream:
            try:
                async for event in stream.events():
                    if isinstance(event, Delta):
                        parts.append(event.text)
                        reasoning.append(event.reasoning)
                        calls.add(event.tool_calls)
                    else:
                        finish = event
            except GatewayError as exc:
                return JSONResponse(
                    error_body(str(exc), exc.error_type, exc.code), status_code=exc.http_status, headers=headers
                )
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
                        "message": message_body("".join(parts), "".join(reasoning), calls.assembled()),
                        "logprobs": None,
                        "finish_reason": finish.reason,
                    }
                ],
                "usage": usage(finish),
            },
            headers=headers,
        )


class _EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # passed on to OpenAI-compatible upstreams

    model: str
    input: Any
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None


async def _embeddings(request: Request, chat: ChatService, keys: tuple[str, ...]) -> JSONResponse:
    """OpenAI's ``POST /v1/embeddings``, answered by the upstream that serves the model."""
    request_id, _ = accept_request_id(request.headers.get("x-request-id"))
    started = time.perf_counter()
    requested = ""
    try:
        body = await read_request(request, _EmbeddingRequest, keys, chat.limits.max_body_bytes)
        requested = body.model
        options = {k: v for k, v in body.model_dump(exclude={"model", "input", "encoding_format"}).items() if v is not None}
        embedded = await chat.embeddings.embed(body.model, body.input, options)
    except GatewayError as exc:
        log_refusal("http/embeddings", request_id, requested, exc.http_status, type(exc).__name__, str(exc), started)
        headers = {"x-request-id": request_id} | ({"retry-after": exc.retry_after} if exc.retry_after else {})
        return JSONResponse(error_body(str(exc), exc.error_type, exc.code), status_code=exc.http_status, headers=headers)
    except ClientDisconnect:
        return JSONResponse({}, status_code=400)  # nobody reads it
    except Exception:  # noqa: BLE001 - any bug: a 500 with an id that is also in the log, never a traceback
        message = internal_error(logger, f"request {request_id}")
        log_refusal("http/embeddings", request_id, requested, 500, "internal_error", message, started)
        return JSONResponse(error_body(message, "server_error"), status_code=500, headers={"x-request-id": request_id})
    log_refusal("http/embeddings", request_id, requested, 200, "ok", "", started)
    encode = as_base64 if body.encoding_format == "base64" else (lambda vector: vector)
    answer: dict[str, Any] = {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(embedded.vectors)],
        "model": body.model,
    }
    if embedded.prompt_tokens is not None:  # unknown is left out, never 0
        answer["usage"] = {"prompt_tokens": embedded.prompt_tokens, "total_tokens": embedded.prompt_tokens}
    return JSONResponse(answer, headers={"x-request-id": request_id})


class _FastPath:
    """``POST /v1/chat/completions`` straight to its handler, every other request through Starlette's
    router and middleware, which cost ~4% of a streamed request's CPU (routing, and two wrappers
    around every chunk's send). The handler catches every error itself, as those wrappers would."""

    def __init__(self, completions: _Completions, app: Starlette) -> None:
        self._completions = completions
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/v1/chat/completions" and scope["method"] == "POST":
            response = await self._completions.handle(Request(scope, receive))
            await response(scope, receive, send)
        else:
            await self._app(scope, receive, send)


def build_http_app(chat: ChatService, ready: Any, keys: tuple[str, ...] = ()) -> ASGIApp:
    """``ready()`` is false while draining: /readyz fails first, as Kubernetes expects."""

    async def models(request: Request) -> JSONResponse:
        if keys and not bearer_matches(request.headers.get("authorization"), keys):
            return JSONResponse(error_body(UNAUTHORIZED, "invalid_request_error", "invalid_api_key"), status_code=401)
        data = [{"id": i, "object": "model", "created": 0, "owned_by": owner} for i, owner, _ in chat.models()]
        return JSONResponse({"object": "list", "data": data})

    async def embeddings(request: Request) -> JSONResponse:
        return await _embeddings(request, chat, keys)

    async def metrics(request: Request) -> Response:
        return Response(chat.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

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

    ollama = OllamaApi(chat, keys)
    completions = _Completions(chat, keys)
    app = Starlette(
        routes=[
            Route("/v1/chat/completions", completions.handle, methods=["POST"]),  # a GET: 405 from Starlette
            # Ollama's own API, for Ollama clients (OLLAMA_HOST=gateway:8000)
            Route("/api/chat", ollama.chat, methods=["POST"]),
            Route("/api/generate", ollama.generate, methods=["POST"]),
            Route("/api/tags", ollama.tags, methods=["GET"]),
            Route("/v1/embeddings", embeddings, methods=["POST"]),
            Route("/api/embed", ollama.embed, methods=["POST"]),
            Route("/api/embeddings", ollama.embeddings, methods=["POST"]),
            Route("/api/show", ollama.show, methods=["POST"]),
            Route("/api/ps", ollama.ps, methods=["GET"]),
            Route("/api/version", ollama.version, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/health", healthz, methods=["GET"]),  # RouteLLM's server's name for it
            Route("/readyz", readyz, methods=["GET"]),
        ],
        exception_handlers={404: not_found, 405: method_not_allowed},
    )
    return _FastPath(completions, app)
