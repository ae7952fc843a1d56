"""Real HTTP servers on free loopback ports for tests: uvicorn running a Starlette app.

The embedding test servers speak the exact wire formats of OpenAI's
``POST /v1/embeddings`` and Ollama's ``POST /api/embed`` (bodies, error JSON,
status codes), and embed with the project's real local embedder, so routing
through them gives real scores.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handlers: the test runner owns signals."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _loopback_socket() -> tuple[socket.socket, int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP_NODELAY on accept
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock, sock.getsockname()[1]


@contextmanager
def serve_app_in_thread(app: Any) -> Iterator[str]:
    """``serve_app`` for synchronous tests: the server runs its own event loop in a thread."""
    sock, port = _loopback_socket()
    server = _QuietServer(uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@asynccontextmanager
async def serve_app(app: Any) -> AsyncIterator[str]:
    """Run ``app`` on 127.0.0.1 with a port the OS picks; yield its base URL."""
    sock, port = _loopback_socket()
    server = _QuietServer(uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@dataclass
class EmbeddingServerState:
    """What the server saw, and how it should misbehave."""

    embed: Callable[[list[str]], np.ndarray]
    model: str = "all-minilm"
    requests: list[dict[str, Any]] = field(default_factory=list)
    fail_status: int | None = None
    retry_after: str | None = None
    delay_s: float = 0.0
    required_key: str | None = None
    dim: int | None = None  # truncate vectors, to simulate another model

    def vectors(self, texts: list[str]) -> list[list[float]]:
        matrix = self.embed(texts)
        if self.dim is not None:
            matrix = matrix[:, : self.dim]
        return matrix.tolist()


def embedding_app(state: EmbeddingServerState) -> Starlette:
    async def record(request: Request) -> dict[str, Any]:
        body = await request.json()
        state.requests.append({"path": request.url.path, "headers": dict(request.headers), "body": body})
        if state.delay_s:
            await asyncio.sleep(state.delay_s)
        return body

    def inputs(body: dict[str, Any]) -> list[str]:
        value = body["input"]
        return [value] if isinstance(value, str) else list(value)

    async def openai_embeddings(request: Request) -> JSONResponse:
        body = await record(request)
        if state.required_key and request.headers.get("authorization") != f"Bearer {state.required_key}":
            return JSONResponse(
                {"error": {"message": "Incorrect API key provided: sk-***.", "type": "invalid_request_error",
                           "param": None, "code": "invalid_api_key"}},
                status_code=401,
            )
        if state.fail_status:
            headers = {"retry-after": state.retry_after} if state.retry_after else None
            return JSONResponse(
                {"error": {"message": "The server is overloaded.", "type": "server_error", "param": None, "code": None}},
                status_code=state.fail_status, headers=headers,
            )
        if body.get("model") != state.model:
            return JSONResponse(
                {"error": {"message": f"The model `{body.get('model')}` does not exist or you do not have access to it.",
                           "type": "invalid_request_error", "param": None, "code": "model_not_found"}},
                status_code=404,
            )
        texts = inputs(body)
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(state.vectors(texts))]
        tokens = sum(len(t.split()) for t in texts)
        return JSONResponse(
            {"object": "list", "data": data, "model": state.model,
             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
        )

    async def ollama_embed(request: Request) -> JSONResponse:
        body = await record(request)
        if state.fail_status:
            return JSONResponse({"error": "server busy, please try again"}, status_code=state.fail_status)
        if body.get("model") != state.model:
            return JSONResponse(
                {"error": f"model \"{body.get('model')}\" not found, try pulling it first"}, status_code=404
            )
        texts = inputs(body)
        return JSONResponse(
            {"model": state.model, "embeddings": state.vectors(texts), "total_duration": 14143917,
             "load_duration": 1019500, "prompt_eval_count": sum(len(t.split()) for t in texts)}
        )

    return Starlette(
        routes=[
            Route("/v1/embeddings", openai_embeddings, methods=["POST"]),
            Route("/api/embed", ollama_embed, methods=["POST"]),
        ]
    )
