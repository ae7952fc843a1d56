"""The gateway's HTTP app: each path, its methods, its handler and the codec that says no for it.

Every request, whatever its path, goes through the front door; only health probes and /metrics
skip the access line (a probe every few seconds would drown the requests).
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..core.chat import ChatService
from ..core.exchange import Exchange
from .anthropic import AnthropicApi, AnthropicCodec
from .frontdoor import Codec, Endpoint, FrontDoor, Handler, HttpFrontDoor
from .ollama import OllamaApi, OllamaCodec
from .openai import OpenAIApi, OpenAICodec
from .openai_responses import ResponsesApi
from .ui import PageCodec, RoutingPage

__all__ = ["build_http_app"]

POST, GET = frozenset({"POST"}), frozenset({"GET", "HEAD"})


def build_http_app(
    chat: ChatService, door: FrontDoor, ready: Callable[[], bool], may_scrape: Callable[[str | None], bool] = lambda _: True
) -> HttpFrontDoor:
    """``ready()`` is false while draining: /readyz fails first, as Kubernetes expects; ``may_scrape(authorization)``:
    whether /metrics answers this request (server.metrics_token)."""
    openai, ollama, anthropic = OpenAIApi(chat), OllamaApi(chat), AnthropicApi(chat)
    openai_codec, ollama_codec, anthropic_codec = OpenAICodec(), OllamaCodec(), AnthropicCodec()
    page = RoutingPage()

    def route(
        api: str, methods: frozenset[str], handler: Handler, codec: Codec, auth: bool = True, browser: bool = False
    ) -> Endpoint:
        return Endpoint(api, methods, handler, codec, auth, browser)

    endpoints = {
        "/v1/chat/completions": route("openai/chat", POST, openai.completions, openai_codec),
        # Anthropic's Messages API, for Claude Code and the anthropic SDK (ANTHROPIC_BASE_URL=http://gateway:8000)
        "/v1/messages": route("anthropic/messages", POST, anthropic.messages, anthropic_codec),
        "/v1/messages/count_tokens": route("anthropic/count_tokens", POST, anthropic.count_tokens, anthropic_codec),
        # OpenAI's Responses API, for Codex and the openai SDK's responses (stateless: store false)
        "/v1/responses": route("openai/responses", POST, ResponsesApi(chat).create, openai_codec),
        "/v1/embeddings": route("openai/embeddings", POST, openai.embeddings, openai_codec),
        "/v1/models": route("openai/models", GET, openai.models, openai_codec),
        "/v1/route": route("openai/route", POST, openai.route, openai_codec, browser=True),  # the decision only: no LLM is called
        "/v1/router": route("openai/router", GET, openai.status, openai_codec, browser=True),  # scorers, thresholds, share, hosts
        "/v1/spend": route("admin/spend", GET, openai.spend, openai_codec),  # admin callers: spend and savings
        "/ui": route("ui/routing", GET, page.page, PageCodec(), browser=True),  # the routing page: a prompt's decision, the hosts
        # Ollama's own API, for Ollama clients (OLLAMA_HOST=gateway:8000)
        "/api/chat": route("ollama/chat", POST, ollama.chat, ollama_codec),
        "/api/generate": route("ollama/generate", POST, ollama.generate, ollama_codec),
        "/api/embed": route("ollama/embed", POST, ollama.embed, ollama_codec),
        "/api/embeddings": route("ollama/embeddings", POST, ollama.embeddings, ollama_codec),
        "/api/tags": route("ollama/tags", GET, ollama.tags, ollama_codec),
        "/api/show": route("ollama/show", POST, ollama.show, ollama_codec),
        "/api/ps": route("ollama/ps", GET, ollama.ps, ollama_codec),
        "/api/version": route("ollama/version", GET, ollama.version, ollama_codec, auth=False),  # as Ollama: no key
    }

    async def metrics(request: Request, x: Exchange) -> Response:
        if not may_scrape(request.headers.get("authorization")):
            return JSONResponse({"error": "GET /metrics names every caller and its spend: it wants 'Authorization: Bearer "
                                 "<server.metrics_token>' or an admin caller's key"}, status_code=401)
        return Response(chat.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    async def healthz(request: Request, x: Exchange) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request, x: Exchange) -> Response:
        if ready():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "draining"}, status_code=503)

    quiet: dict[str, Handler] = {"/metrics": metrics, "/healthz": healthz, "/health": healthz, "/readyz": readyz}
    def codec_of(path: str) -> Codec:
        if path.startswith("/api/"):
            return ollama_codec
        return anthropic_codec if path.startswith("/v1/messages") else openai_codec

    return HttpFrontDoor(door, endpoints, quiet, codec_of)
