"""OpenAI-compatible and Ollama embedding backends against real HTTP servers speaking their formats."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import pytest

from router_service.adapters.remote_embedders import OllamaEmbedder, OpenAIEmbedder
from router_service.config import OllamaEmbedderSettings, OpenAIEmbedderSettings
from router_service.errors import EmbedderMisconfigured, EmbedderUnavailable
from tests.conftest import closed_port
from tests.http_servers import EmbeddingServerState, embedding_app, serve_app


@pytest.fixture
async def server(local_embedder) -> AsyncIterator[tuple[str, EmbeddingServerState]]:
    state = EmbeddingServerState(embed=local_embedder.embed_sync)
    async with serve_app(embedding_app(state)) as url:
        yield url, state


async def test_openai_backend_speaks_v1_embeddings(server, local_embedder, monkeypatch) -> None:
    url, state = server
    monkeypatch.setenv("EMBED_KEY", "sk-test-123")
    embedder = OpenAIEmbedder(OpenAIEmbedderSettings(base_url=f"{url}/v1", model="all-minilm", api_key_env="EMBED_KEY"))
    try:
        vectors = await embedder.embed(["first prompt", "second prompt"])
    finally:
        await embedder.aclose()
    np.testing.assert_allclose(vectors, local_embedder.embed_sync(["first prompt", "second prompt"]), atol=1e-6)
    (seen,) = state.requests
    assert seen["path"] == "/v1/embeddings"
    assert seen["body"] == {"model": "all-minilm", "input": ["first prompt", "second prompt"], "encoding_format": "float"}
    assert seen["headers"]["authorization"] == "Bearer sk-test-123"


async def test_ollama_backend_speaks_api_embed(server, local_embedder) -> None:
    url, state = server
    embedder = OllamaEmbedder(OllamaEmbedderSettings(base_url=url, model="all-minilm"))
    try:
        vectors = await embedder.embed(["a prompt"])
    finally:
        await embedder.aclose()
    np.testing.assert_allclose(vectors, local_embedder.embed_sync(["a prompt"]), atol=1e-6)
    (seen,) = state.requests
    assert seen["path"] == "/api/embed"
    assert seen["body"] == {"model": "all-minilm", "input": ["a prompt"], "truncate": True}
    assert "authorization" not in seen["headers"]


async def test_ambient_openai_variables_are_never_read(server, monkeypatch) -> None:
    """The seed's complaint: OPENAI_API_KEY / OPENAI_BASE_URL must change nothing unless named."""
    url, state = server
    monkeypatch.setenv("OPENAI_API_KEY", "sk-ambient-should-not-leak")
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{closed_port()}/v1")
    embedder = OpenAIEmbedder(OpenAIEmbedderSettings(base_url=f"{url}/v1", model="all-minilm"))
    try:
        await embedder.embed(["hello"])
    finally:
        await embedder.aclose()
    (seen,) = state.requests  # went to the configured URL, not OPENAI_BASE_URL
    assert "authorization" not in seen["headers"]


async def test_refused_key_names_the_key_setting(server) -> None:
    url, state = server
    state.required_key = "sk-right"
    embedder = OpenAIEmbedder(OpenAIEmbedderSettings(base_url=f"{url}/v1", model="all-minilm", api_key="sk-wrong"))
    try:
        with pytest.raises(EmbedderMisconfigured, match=r"HTTP 401: the API key was refused .*embedder\.openai\.api_key_env"):
            await embedder.embed(["hello"])
    finally:
        await embedder.aclose()


async def test_unknown_model_names_the_model_setting_not_the_key(server) -> None:
    url, _ = server
    embedder = OllamaEmbedder(OllamaEmbedderSettings(base_url=url, model="nomic-embed-text"))
    try:
        with pytest.raises(EmbedderMisconfigured, match=r"HTTP 404 .*not found, try pulling it first.*embedder\.ollama\.model"):
            await embedder.embed(["hello"])
    finally:
        await embedder.aclose()


async def test_wrong_base_url_path_is_reported_as_such(server) -> None:
    url, _ = server
    embedder = OpenAIEmbedder(OpenAIEmbedderSettings(base_url=url, model="all-minilm"))  # missing /v1
    try:
        with pytest.raises(EmbedderMisconfigured, match=rf"{url}/embeddings answered HTTP 404.*embedder\.openai\.base_url"):
            await embedder.embed(["hello"])
    finally:
        await embedder.aclose()


async def test_unreachable_backend_is_unavailable_and_names_the_url() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    embedder = OllamaEmbedder(OllamaEmbedderSettings(base_url=url, model="all-minilm", timeout_s=2))
    try:
        with pytest.raises(EmbedderUnavailable, match=rf"{url}/api/embed is unreachable.*embedder\.ollama\.base_url"):
            await embedder.embed(["hello"])
    finally:
        await embedder.aclose()


async def test_overload_is_unavailable_with_retry_after(server) -> None:
    url, state = server
    state.fail_status, state.retry_after = 429, "7"
    embedder = OpenAIEmbedder(OpenAIEmbedderSettings(base_url=f"{url}/v1", model="all-minilm"))
    try:
        with pytest.raises(EmbedderUnavailable, match=r"HTTP 429 \(The server is overloaded.\); retry after 7s"):
            await embedder.embed(["hello"])
    finally:
        await embedder.aclose()


async def test_slow_backend_times_out_naming_the_timeout_setting(server) -> None:
    url, state = server
    state.delay_s = 1.0
    embedder = OllamaEmbedder(OllamaEmbedderSettings(base_url=url, model="all-minilm", timeout_s=0.2))
    try:
        with pytest.raises(EmbedderUnavailable, match=r"did not answer within 0.2s .*embedder\.ollama\.timeout_s"):
            await embedder.embed(["hello"])
    finally:
        await embedder.aclose()


async def test_dimension_change_is_caught(server) -> None:
    url, state = server
    state.dim = 256
    embedder = OllamaEmbedder(OllamaEmbedderSettings(base_url=url, model="all-minilm", dim=384))
    try:
        with pytest.raises(EmbedderMisconfigured, match=r"returned dimension 256, expected 384"):
            await embedder.embed(["hello"])
    finally:
        await embedder.aclose()
