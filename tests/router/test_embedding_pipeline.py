"""Cache, single flight and micro-batching in front of the real local embedder."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from router_service.embedding import EmbeddingPipeline, MicroBatcher
from router_service.errors import EmbedderUnavailable


class CountingEmbedder:
    """The real local embedder, with a record of each batch it was asked for."""

    backend = "local"

    def __init__(self, inner, fail: bool = False) -> None:  # type: ignore[no-untyped-def]
        self._inner = inner
        self.name, self.dim, self.max_batch = inner.name, inner.dim, 32
        self.batches: list[list[str]] = []
        self.fail = fail

    async def embed(self, texts: list[str]) -> np.ndarray:
        self.batches.append(list(texts))
        if self.fail:
            raise EmbedderUnavailable("embedding backend at http://embedder.test is unreachable")
        return await self._inner.embed(texts)

    async def aclose(self) -> None:
        return None


async def test_identical_concurrent_prompts_share_one_call(local_embedder) -> None:  # type: ignore[no-untyped-def]
    counting = CountingEmbedder(local_embedder)
    pipeline = EmbeddingPipeline(counting, cache_size=100)
    try:
        results = await asyncio.gather(*(pipeline.embed(["the same prompt"]) for _ in range(20)))
    finally:
        await pipeline.aclose()
    assert sum(len(b) for b in counting.batches) == 1
    first = results[0][0]
    for rows, cached in results:
        np.testing.assert_array_equal(rows, first)
        assert cached == [False]


async def test_concurrent_different_prompts_are_batched(local_embedder) -> None:  # type: ignore[no-untyped-def]
    counting = CountingEmbedder(local_embedder)
    pipeline = EmbeddingPipeline(counting, cache_size=0)
    prompts = [f"prompt number {i}" for i in range(24)]
    try:
        results = await asyncio.gather(*(pipeline.embed([p]) for p in prompts))
    finally:
        await pipeline.aclose()
    assert sorted(t for b in counting.batches for t in b) == sorted(prompts)
    assert len(counting.batches) < len(prompts) / 2  # coalesced while the first batch ran
    expected = local_embedder.embed_sync(prompts)
    for (rows, _), row in zip(results, expected, strict=True):
        np.testing.assert_allclose(rows[0], row, atol=1e-5)


async def test_cache_hits_are_flagged_and_skip_the_embedder(local_embedder) -> None:  # type: ignore[no-untyped-def]
    counting = CountingEmbedder(local_embedder)
    pipeline = EmbeddingPipeline(counting, cache_size=2)
    try:
        _, first = await pipeline.embed(["a", "b"])
        _, second = await pipeline.embed(["a", "b", "c"])  # c evicts a (LRU of 2)
        _, third = await pipeline.embed(["a"])
    finally:
        await pipeline.aclose()
    assert first == [False, False]
    assert second == [True, True, False]
    assert third == [False]
    assert counting.batches == [["a", "b"], ["c"], ["a"]]


async def test_failures_reach_every_waiter_and_are_not_cached(local_embedder) -> None:  # type: ignore[no-untyped-def]
    counting = CountingEmbedder(local_embedder, fail=True)
    pipeline = EmbeddingPipeline(counting, cache_size=10)
    try:
        results = await asyncio.gather(*(pipeline.embed(["x"]) for _ in range(3)), return_exceptions=True)
        assert all(isinstance(r, EmbedderUnavailable) for r in results)
        counting.fail = False
        _, cached = await pipeline.embed(["x"])
    finally:
        await pipeline.aclose()
    assert cached == [False]
    assert len(counting.batches) == 2


async def test_one_cancelled_caller_does_not_fail_the_others(local_embedder) -> None:  # type: ignore[no-untyped-def]
    pipeline = EmbeddingPipeline(CountingEmbedder(local_embedder), cache_size=10)
    try:
        first = asyncio.create_task(pipeline.embed(["shared prompt"]))
        second = asyncio.create_task(pipeline.embed(["shared prompt"]))
        await asyncio.sleep(0)
        first.cancel()
        rows, _ = await second
        with pytest.raises(asyncio.CancelledError):
            await first
    finally:
        await pipeline.aclose()
    assert rows.shape == (1, 384)


async def test_micro_batcher_returns_each_caller_its_rows() -> None:
    calls: list[int] = []

    async def double(items: list[float]) -> np.ndarray:
        calls.append(len(items))
        await asyncio.sleep(0.01)
        return np.asarray(items) * 2

    batcher: MicroBatcher[float] = MicroBatcher(double, max_batch=8)
    try:
        results = await asyncio.gather(*(batcher.submit([float(i), float(i) + 0.5]) for i in range(10)))
    finally:
        await batcher.aclose()
    for i, rows in enumerate(results):
        np.testing.assert_array_equal(rows, [2.0 * i, 2.0 * i + 1.0])
    assert all(n <= 8 for n in calls[1:]) and len(calls) < 10
