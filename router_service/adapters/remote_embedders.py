"""Embedding over HTTP: OpenAI-compatible ``/v1/embeddings`` and Ollama's ``/api/embed``.

Each backend has its own base URL, key and timeout from the router's config,
and one pooled ``httpx.AsyncClient``. Failures name the URL and the setting
to fix, and tell a refused key from a wrong URL from a wrong model.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import httpx
import numpy as np

from service_core.redact import Redactor
from service_core.upstream_errors import error_detail

from ..config import RemoteEmbedderSettings
from ..errors import EmbedderMisconfigured, EmbedderUnavailable

__all__ = ["OllamaEmbedder", "OpenAIEmbedder", "RemoteEmbedder"]


class RemoteEmbedder:
    """Shared HTTP plumbing; subclasses say where to post and how to read the answer."""

    runs: Literal["async"] = "async"
    backend = ""
    path = ""

    def __init__(self, settings: RemoteEmbedderSettings) -> None:
        self._settings = settings
        self.url = settings.base_url.rstrip("/") + self.path
        self.name = f"{self.backend}:{settings.model}"
        self.dim = settings.dim or 0
        self.max_batch = settings.max_batch
        self.max_concurrency = settings.max_concurrency
        headers = {"Accept": "application/json"}
        key = settings.resolve_api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._redact = Redactor([key])  # an echoing server must not put the key into errors or logs
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(settings.timeout_s),
            limits=httpx.Limits(max_connections=settings.max_concurrency, max_keepalive_connections=settings.max_concurrency),
            trust_env=False,  # no ambient proxy or netrc credentials either
        )
        self._slots = asyncio.Semaphore(settings.max_concurrency)

    def _setting(self, field: str) -> str:
        return f"embedder.{self.backend}.{field}"

    def request_body(self, texts: list[str]) -> dict[str, Any]:
        raise NotImplementedError

    def parse(self, body: Any) -> list[list[float]]:
        raise NotImplementedError

    async def embed(self, texts: list[str]) -> np.ndarray:
        async with self._slots:
            response = await self._post(texts)
        try:
            vectors = self.parse(response.json())
            matrix = np.asarray(vectors, dtype=np.float32)
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise EmbedderMisconfigured(
                f"embedding backend at {self.url} answered with an unexpected body ({exc}); "
                f"is {self._setting('base_url')} an {self.backend} server?"
            ) from exc
        if matrix.ndim != 2 or matrix.shape[0] != len(texts):
            raise EmbedderMisconfigured(
                f"embedding backend at {self.url} returned {matrix.shape[0] if matrix.ndim else 0} vectors "
                f"for {len(texts)} inputs"
            )
        if self.dim and matrix.shape[1] != self.dim:
            raise EmbedderMisconfigured(
                f"embedding backend at {self.url} returned dimension {matrix.shape[1]}, expected {self.dim}: "
                f"{self._setting('model')} must be the embedding model the scorer was trained with"
            )
        # Scorers are trained on unit vectors; not every server normalises.
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        return np.asarray(matrix / np.maximum(norms, 1e-12), dtype=np.float32)

    async def _post(self, texts: list[str]) -> httpx.Response:
        try:
            response = await self._client.post(self.url, json=self.request_body(texts))
        except httpx.TimeoutException as exc:
            raise EmbedderUnavailable(
                f"embedding backend at {self.url} did not answer within {self._settings.timeout_s:g}s "
                f"({type(exc).__name__}); raise {self._setting('timeout_s')} or check the server"
            ) from exc
        except httpx.HTTPError as exc:
            raise EmbedderUnavailable(
                f"embedding backend at {self.url} is unreachable ({type(exc).__name__}: {exc}); "
                f"check {self._setting('base_url')}"
            ) from exc
        if response.status_code >= 400:
            raise self._status_error(response)
        return response

    def _status_error(self, response: httpx.Response) -> Exception:
        status = response.status_code
        detail = self._redact(error_detail(response))
        where = f"embedding backend at {self.url} answered HTTP {status}"
        if status in (401, 403):
            return EmbedderMisconfigured(
                f"{where}: the API key was refused ({detail}); "
                f"set {self._setting('api_key_env')} to the variable that holds a valid key"
            )
        if status == 404:
            return EmbedderMisconfigured(
                f"{where} ({detail}): check {self._setting('base_url')} (the path) "
                f"and {self._setting('model')} ({self._settings.model!r})"
            )
        if status == 429 or status >= 500:
            retry = response.headers.get("retry-after")
            hint = f"; retry after {retry}s" if retry else ""
            return EmbedderUnavailable(f"{where} ({detail}){hint}")
        return EmbedderMisconfigured(f"{where} ({detail}); check {self._setting('model')}")

    async def aclose(self) -> None:
        await self._client.aclose()


class OpenAIEmbedder(RemoteEmbedder):
    """OpenAI-compatible: OpenAI, Ollama's /v1, vLLM, llama.cpp server."""

    backend = "openai"
    path = "/embeddings"

    def request_body(self, texts: list[str]) -> dict[str, Any]:
        return {"model": self._settings.model, "input": texts, "encoding_format": "float"}

    def parse(self, body: Any) -> list[list[float]]:
        items = sorted(body["data"], key=lambda item: item["index"])
        return [item["embedding"] for item in items]


class OllamaEmbedder(RemoteEmbedder):
    """Ollama's native API."""

    backend = "ollama"
    path = "/api/embed"

    def request_body(self, texts: list[str]) -> dict[str, Any]:
        return {"model": self._settings.model, "input": texts, "truncate": True}

    def parse(self, body: Any) -> list[list[float]]:
        return list(body["embeddings"])
