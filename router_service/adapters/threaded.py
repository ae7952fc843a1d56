"""The shared shape of in-process embedders: synchronous work, run off the event loop."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ["ThreadedEmbedder"]


class ThreadedEmbedder:
    """Subclasses implement ``embed_sync``; the scoring pipeline calls it in its own worker
    job (embedding and scoring together), and ``embed`` runs it in the executor."""

    def __init__(self, executor: ThreadPoolExecutor) -> None:
        self._executor = executor

    def embed_sync(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    async def embed(self, texts: list[str]) -> np.ndarray:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.embed_sync, texts)

    async def aclose(self) -> None:
        return None
