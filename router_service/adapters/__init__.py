"""Adapters behind small interfaces: embedders (local ONNX, static, OpenAI, Ollama) and the scorer.

How an embedder runs is declared once, by its ``runs`` tag, and decided here:

- ``"in_process"`` (local ONNX, static): CPU work behind ``embed_sync``. The serving
  pipeline calls it in a worker thread (embedding and scoring in one job); training
  calls it directly.
- ``"async"`` (OpenAI-compatible, Ollama): I/O behind ``async embed``, on the event
  loop that first used it, and ``aclose`` on that same loop. Training drives it
  from one long-lived loop (``blocking_embedder``), never one loop per call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from contextlib import contextmanager
from typing import Literal, Protocol

import numpy as np

from ..config import EmbedderSettings

__all__ = ["AsyncEmbedder", "Embedder", "InProcessEmbedder", "blocking_embedder", "embed_async", "open_embedder"]


class InProcessEmbedder(Protocol):
    """Turns texts into unit-length vectors, one row per text, in the calling thread."""

    runs: Literal["in_process"]
    backend: str
    name: str
    dim: int
    max_batch: int

    def embed_sync(self, texts: list[str]) -> np.ndarray: ...


class AsyncEmbedder(Protocol):
    """Turns texts into unit-length vectors over the network; ``dim`` is 0 until probed."""

    runs: Literal["async"]
    backend: str
    name: str
    dim: int
    max_batch: int
    max_concurrency: int

    async def embed(self, texts: list[str]) -> np.ndarray: ...

    async def aclose(self) -> None: ...


Embedder = InProcessEmbedder | AsyncEmbedder


def open_embedder(settings: EmbedderSettings) -> Embedder:
    """The backend the config selects; nothing else is constructed."""
    if settings.backend == "local":
        from .local_embedder import LocalEmbedder

        return LocalEmbedder(settings.local)
    if settings.backend == "static":
        from .static_embedder import StaticEmbedder

        return StaticEmbedder(settings.static)
    from .remote_embedders import OllamaEmbedder, OpenAIEmbedder

    if settings.backend == "openai":
        return OpenAIEmbedder(settings.openai)
    return OllamaEmbedder(settings.ollama)


async def embed_async(embedder: Embedder, texts: list[str], executor: Executor) -> np.ndarray:
    """Embed from the event loop, whichever way the embedder runs (in-process work goes to ``executor``)."""
    if embedder.runs == "in_process":
        return await asyncio.get_running_loop().run_in_executor(executor, embedder.embed_sync, texts)
    return await embedder.embed(texts)


@contextmanager
def blocking_embedder(settings: EmbedderSettings) -> Iterator[tuple[str, Callable[[list[str]], np.ndarray]]]:
    """(name, embed) for synchronous callers (training): one event loop serves every call of an async embedder."""
    embedder = open_embedder(settings)
    if embedder.runs == "in_process":
        yield embedder.name, embedder.embed_sync
        return
    remote = embedder
    with asyncio.Runner() as runner:
        try:
            yield remote.name, lambda texts: runner.run(remote.embed(texts))
        finally:
            runner.run(remote.aclose())
