"""The router's embedding call: LRU cache, single flight and micro-batching.

Concurrent requests for the same text share one embedding call; concurrent
requests for different texts are coalesced into one batch, so a burst of
routes costs one onnxruntime run (or one HTTP call) instead of many.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np
from cachetools import LRUCache

from .adapters import Embedder

__all__ = ["EmbeddingPipeline", "MicroBatcher"]

logger = logging.getLogger(__name__)

Item = TypeVar("Item")


@dataclass
class _Pending(Generic[Item]):
    items: Sequence[Item]
    future: asyncio.Future[np.ndarray] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class MicroBatcher(Generic[Item]):
    """Runs ``fn`` on batches of whatever was submitted while the last batch ran.

    ``workers`` batches may be in flight at once. A lone request is not held
    back waiting for company: batching comes only from requests that arrive
    while a batch is running, so latency at low load stays that of one call.
    """

    def __init__(self, fn: Callable[[list[Item]], Awaitable[np.ndarray]], max_batch: int, workers: int = 1) -> None:
        self._fn = fn
        self._max_batch = max_batch
        self._workers = workers
        self._queue: asyncio.Queue[_Pending[Item]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    async def submit(self, items: Sequence[Item]) -> np.ndarray:
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._work(), name=f"batcher-{i}") for i in range(self._workers)]
        pending = _Pending(items)
        self._queue.put_nowait(pending)
        return await pending.future

    async def _work(self) -> None:
        while True:
            batch = [await self._queue.get()]
            size = len(batch[0].items)
            while size < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
                size += len(batch[-1].items)
            live = [p for p in batch if not p.future.done()]  # drop callers that gave up
            if live:
                await self._run(live)

    async def _run(self, batch: list[_Pending[Item]]) -> None:
        items = [item for pending in batch for item in pending.items]
        try:
            rows = await self._fn(items)
        except Exception as exc:
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        start = 0
        for pending in batch:
            end = start + len(pending.items)
            if not pending.future.done():
                pending.future.set_result(rows[start:end])
            start = end

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []


class EmbeddingPipeline:
    """Embeds texts through the cache, shared in-flight calls and the batcher."""

    def __init__(self, embedder: Embedder, cache_size: int, workers: int = 1) -> None:
        self.embedder = embedder
        self._cache: LRUCache[str, np.ndarray] | None = LRUCache(cache_size) if cache_size else None
        self._inflight: dict[str, asyncio.Future[np.ndarray]] = {}
        self._fills: set[asyncio.Task[None]] = set()
        self._batcher: MicroBatcher[str] = MicroBatcher(embedder.embed, embedder.max_batch, workers)

    async def embed(self, texts: Sequence[str]) -> tuple[np.ndarray, list[bool]]:
        """Rows for ``texts`` and, for each, whether it came from the cache."""
        rows: list[np.ndarray | None] = [None] * len(texts)
        cached = [False] * len(texts)
        waits: dict[int, asyncio.Future[np.ndarray]] = {}
        missing: list[str] = []
        for i, text in enumerate(texts):
            hit = self._cache.get(text) if self._cache is not None else None
            if hit is not None:
                rows[i], cached[i] = hit, True
                continue
            future = self._inflight.get(text)
            if future is None:
                future = asyncio.get_running_loop().create_future()
                # Nobody may await a failed shared future; mark its error as seen.
                future.add_done_callback(lambda f: f.cancelled() or f.exception())
                self._inflight[text] = future
                missing.append(text)
            waits[i] = future
        if missing:
            task = asyncio.create_task(self._fill(missing))
            self._fills.add(task)
            task.add_done_callback(self._fills.discard)
        for i, future in waits.items():
            # shield: one caller's cancellation must not fail the others sharing it.
            rows[i] = await asyncio.shield(future)
        return np.stack(rows), cached  # type: ignore[arg-type]

    async def _fill(self, texts: list[str]) -> None:
        futures = [self._inflight[text] for text in texts]
        try:
            matrix = await self._batcher.submit(texts)
        except Exception as exc:  # every waiter sees it; nothing is cached
            for future in futures:
                if not future.done():
                    future.set_exception(exc)
        except asyncio.CancelledError:
            for future in futures:
                future.cancel()
            raise
        else:
            for text, future, row in zip(texts, futures, matrix, strict=True):
                row = row.copy()  # a view would keep the whole batch alive in the cache
                row.flags.writeable = False
                if self._cache is not None:
                    self._cache[text] = row
                if not future.done():
                    future.set_result(row)
        finally:
            for text, future in zip(texts, futures, strict=True):
                if self._inflight.get(text) is future:
                    del self._inflight[text]

    async def aclose(self) -> None:
        for task in list(self._fills):
            task.cancel()
        await asyncio.gather(*self._fills, return_exceptions=True)
        await self._batcher.aclose()
        await self.embedder.aclose()
