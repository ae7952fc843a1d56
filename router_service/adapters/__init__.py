"""Adapters behind small interfaces: embedders (local ONNX, static, OpenAI, Ollama) and the scorer."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np

from ..config import EmbedderSettings

__all__ = ["Embedder", "open_embedder"]


class Embedder(Protocol):
    """Turns texts into unit-length vectors, one row per text."""

    backend: str
    name: str
    dim: int  # 0 until known (a remote backend not probed yet)
    max_batch: int

    async def embed(self, texts: list[str]) -> np.ndarray: ...

    async def aclose(self) -> None: ...


def open_embedder(settings: EmbedderSettings, executor: ThreadPoolExecutor) -> Embedder:
    """The backend the config selects; nothing else is constructed."""
    if settings.backend == "local":
        from .local_embedder import LocalEmbedder

        return LocalEmbedder(settings.local, executor)
    if settings.backend == "static":
        from .static_embedder import StaticEmbedder

        return StaticEmbedder(settings.static, executor)
    from .remote_embedders import OllamaEmbedder, OpenAIEmbedder

    if settings.backend == "openai":
        return OpenAIEmbedder(settings.openai)
    return OllamaEmbedder(settings.ollama)
