"""Embeddings through the gateway: /v1/embeddings (the official SDK) and Ollama's /api/embed (the ollama client).

The upstreams speak the real formats (tests/http_servers.py) and embed with the real local
MiniLM embedder, so the vectors that come back can be checked against it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import numpy as np
import ollama
import openai
import pytest

from gateway_service.server import GatewayApp, build_gateway
from tests.gateway.conftest import STRONG, gateway_settings
from tests.http_servers import EmbeddingServerState, embedding_app, serve_app
from tests.llm_servers import LLMServerState, llm_app

TEXTS = ["The cat sat on the mat.", "Quantum chromodynamics describes the strong force."]


@dataclass
class EmbeddingStack:
    gateway: GatewayApp
    via_ollama: EmbeddingServerState
    via_openai: EmbeddingServerState

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.gateway.http_port}"


@pytest.fixture
async def stack(router_app, local_embedder) -> AsyncIterator[EmbeddingStack]:
    via_ollama = EmbeddingServerState(local_embedder.embed_sync, model="all-minilm")
    via_openai = EmbeddingServerState(local_embedder.embed_sync, model="text-embedding-3-small")
    chats = LLMServerState()
    async with (
        serve_app(embedding_app(via_ollama)) as ollama_url,
        serve_app(embedding_app(via_openai)) as openai_url,
        serve_app(llm_app(chats)) as chat_url,
    ):
        settings = gateway_settings(router_app.port, chat_url, chat_url, upstreams=[
            {"name": "chat", "provider": "ollama", "base_url": chat_url, "models": [STRONG, "llama3.2:1b"]},
            {"name": "ollama-embed", "provider": "ollama", "base_url": ollama_url, "models": ["all-minilm"]},
            {"name": "openai-embed", "provider": "openai", "base_url": f"{openai_url}/v1", "models": ["text-embedding-3-small"]},
        ])
        app = await build_gateway(settings)
        try:
            yield EmbeddingStack(app, via_ollama, via_openai)
        finally:
            await app.stop()


@pytest.mark.parametrize("model", ["all-minilm", "text-embedding-3-small"], ids=["ollama-upstream", "openai-upstream"])
async def test_the_openai_sdk_gets_the_upstream_s_vectors(stack: EmbeddingStack, local_embedder, model: str) -> None:
    async with openai.AsyncOpenAI(base_url=f"{stack.url}/v1", api_key="x", max_retries=0) as sdk:
        answer = await sdk.embeddings.create(model=model, input=TEXTS)  # the SDK asks for base64 and decodes it
        single = await sdk.embeddings.create(model=model, input=TEXTS[0], encoding_format="float")
    expected = local_embedder.embed_sync(TEXTS)
    got = np.array([d.embedding for d in sorted(answer.data, key=lambda d: d.index)])
    np.testing.assert_allclose(got, expected, atol=1e-6)  # float32 on the wire: exact to float32
    np.testing.assert_allclose(single.data[0].embedding, expected[0], atol=1e-6)
    assert answer.model == model and answer.usage.prompt_tokens == sum(len(t.split()) for t in TEXTS)
    upstream = stack.via_ollama if model == "all-minilm" else stack.via_openai
    assert upstream.requests[-1]["body"]["input"] == [TEXTS[0]]


async def test_the_ollama_client_embeds_through_the_gateway(stack: EmbeddingStack, local_embedder) -> None:
    async with ollama.AsyncClient(host=stack.url) as client:
        answer = await client.embed(model="all-minilm", input=TEXTS, truncate=True)
        legacy = await client.embeddings(model="text-embedding-3-small", prompt=TEXTS[1])
    np.testing.assert_allclose(np.array(answer.embeddings), local_embedder.embed_sync(TEXTS), atol=1e-6)
    np.testing.assert_allclose(legacy.embedding, local_embedder.embed_sync([TEXTS[1]])[0], atol=1e-6)
    assert stack.via_ollama.requests[-1]["body"]["truncate"] is True  # Ollama's own settings reach Ollama
    assert "truncate" not in stack.via_openai.requests[-1]["body"]  # ... and not an OpenAI-compatible server


async def test_embedding_errors_say_what_to_fix(stack: EmbeddingStack) -> None:
    async with httpx.AsyncClient(base_url=stack.url) as http:
        routed = await http.post("/v1/embeddings", json={"model": "router", "input": "hi"})
        assert routed.status_code == 400 and "routes chats, not embeddings" in routed.json()["error"]["message"]
        unknown = await http.post("/v1/embeddings", json={"model": "nope", "input": "hi"})
        assert unknown.status_code == 404 and "available:" in unknown.json()["error"]["message"]
        tokens = await http.post("/v1/embeddings", json={"model": "all-minilm", "input": [[1, 2, 3]]})
        assert tokens.status_code == 400 and "token arrays" in tokens.json()["error"]["message"]
        empty = await http.post("/api/embed", json={"model": "all-minilm", "input": []})
        assert empty.status_code == 400 and "input is empty" in empty.json()["error"]
        stack.via_ollama.fail_status = 503
        busy = await http.post("/v1/embeddings", json={"model": "all-minilm", "input": "hi"})
        assert busy.status_code in (502, 503) and "/api/embed" in busy.json()["error"]["message"]
        assert "ollama-embed" in busy.json()["error"]["message"]
