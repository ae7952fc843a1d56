"""Cache, single flight and micro-batching in front of the real local embedder and scorer."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import numpy as np
import pytest

from router_service.adapters.scorer import OnnxScorer
from router_service.config import BUNDLED_SCORERS
from router_service.errors import EmbedderUnavailable
from router_service.pipeline import MicroBatcher, ScoringPipeline


class CountingEmbedder:
    """The real local embedder behind the async (remote-style) interface, recording each batch."""

    runs: Literal["async"] = "async"
    backend = "test"
    max_concurrency = 1

    def __init__(self, inner, fail: bool = False) -> None:
        self._inner = inner
        self.name, self.dim, self.max_batch = inner.name, inner.dim, 32
        self.batches: list[list[str]] = []
        self.fail = fail

    async def embed(self, texts: list[str]) -> np.ndarray:
        self.batches.append(list(texts))
        if self.fail:
            raise EmbedderUnavailable("embedding backend at http://embedder.test is unreachable")
        return self._inner.embed_sync(texts)

    async def aclose(self) -> None:
        return None


@pytest.fixture(scope="module")
def scorer() -> OnnxScorer:
    return OnnxScorer("mf", BUNDLED_SCORERS["mf"]["local"])


def pipeline_for(embedder, scorer: OnnxScorer, executor: ThreadPoolExecutor, cache_size: int) -> ScoringPipeline:
    return ScoringPipeline(embedder, [scorer], executor, cache_size=cache_size)


async def test_rows_are_the_scorers_model_scores(local_embedder, scorer, executor) -> None:
    prompts = ["What is an eigenvector?", "Tell me a joke."]
    for embedder in (local_embedder, CountingEmbedder(local_embedder)):  # one-job and two-stage paths
        pipeline = pipeline_for(embedder, scorer, executor, cache_size=0)
        try:
            rows, cached, times = await pipeline.scores(prompts)
        finally:
            await pipeline.aclose()
        expected = scorer.model_scores_sync(local_embedder.embed_sync(prompts))
        np.testing.assert_allclose(rows[:, pipeline.columns["mf"]], expected, atol=1e-5)
        assert cached == [False, False] and times.embed_ms > 0 and times.score_ms > 0


async def test_identical_concurrent_prompts_share_one_call(local_embedder, scorer, executor) -> None:
    counting = CountingEmbedder(local_embedder)
    pipeline = pipeline_for(counting, scorer, executor, cache_size=100)
    try:
        results = await asyncio.gather(*(pipeline.scores(["the same prompt"]) for _ in range(20)))
    finally:
        await pipeline.aclose()
    assert sum(len(b) for b in counting.batches) == 1
    first = results[0][0]
    for rows, cached, _ in results:
        np.testing.assert_array_equal(rows, first)
        assert cached == [False]


async def test_concurrent_different_prompts_are_batched(local_embedder, scorer, executor) -> None:
    counting = CountingEmbedder(local_embedder)
    pipeline = pipeline_for(counting, scorer, executor, cache_size=0)
    prompts = [f"prompt number {i}" for i in range(24)]
    try:
        results = await asyncio.gather(*(pipeline.scores([p]) for p in prompts))
    finally:
        await pipeline.aclose()
    assert sorted(t for b in counting.batches for t in b) == sorted(prompts)
    assert len(counting.batches) < len(prompts) / 2  # coalesced while the first batch ran
    expected = scorer.model_scores_sync(local_embedder.embed_sync(prompts))
    for (rows, _, _), row in zip(results, expected, strict=True):
        np.testing.assert_allclose(rows[0], row, atol=1e-5)


async def test_cache_hits_are_flagged_and_skip_the_embedder(local_embedder, scorer, executor) -> None:
    counting = CountingEmbedder(local_embedder)
    pipeline = pipeline_for(counting, scorer, executor, cache_size=2)
    try:
        _, first, _ = await pipeline.scores(["a", "b"])
        _, second, _ = await pipeline.scores(["a", "b", "c"])  # c evicts a (LRU of 2)
        _, third, _ = await pipeline.scores(["a"])
        _, fourth, times = await pipeline.scores(["a"])
    finally:
        await pipeline.aclose()
    assert (first, second, third, fourth) == ([False, False], [True, True, False], [False], [True])
    assert counting.batches == [["a", "b"], ["c"], ["a"]]
    assert times.embed_ms == 0 and times.score_ms == 0


async def test_failures_reach_every_waiter_and_are_not_cached(local_embedder, scorer, executor) -> None:
    counting = CountingEmbedder(local_embedder, fail=True)
    pipeline = pipeline_for(counting, scorer, executor, cache_size=10)
    try:
        results = await asyncio.gather(*(pipeline.scores(["x"]) for _ in range(3)), return_exceptions=True)
        assert all(isinstance(r, EmbedderUnavailable) for r in results)
        counting.fail = False
        _, cached, _ = await pipeline.scores(["x"])
    finally:
        await pipeline.aclose()
    assert cached == [False]
    assert len(counting.batches) == 2


async def test_one_cancelled_caller_does_not_fail_the_others(local_embedder, scorer, executor) -> None:
    pipeline = pipeline_for(CountingEmbedder(local_embedder), scorer, executor, cache_size=10)
    try:
        first = asyncio.create_task(pipeline.scores(["shared prompt"]))
        second = asyncio.create_task(pipeline.scores(["shared prompt"]))
        await asyncio.sleep(0)
        first.cancel()
        rows, _, _ = await second
        with pytest.raises(asyncio.CancelledError):
            await first
    finally:
        await pipeline.aclose()
    assert rows.shape == (1, len(scorer.models))


async def test_micro_batcher_returns_each_caller_its_rows() -> None:
    calls: list[int] = []

    async def double(items: list[float]) -> tuple[np.ndarray, int]:
        calls.append(len(items))
        await asyncio.sleep(0.01)
        return np.asarray(items) * 2, len(calls)

    batcher: MicroBatcher[float, int] = MicroBatcher(double, max_batch=8)
    try:
        results = await asyncio.gather(*(batcher.submit([float(i), float(i) + 0.5]) for i in range(10)))
    finally:
        await batcher.aclose()
    for i, (rows, batch_number) in enumerate(results):
        np.testing.assert_array_equal(rows, [2.0 * i, 2.0 * i + 1.0])
        assert 1 <= batch_number <= len(calls)
    assert all(n <= 8 for n in calls[1:]) and len(calls) < 10


async def test_queued_work_that_would_end_past_its_deadline_is_refused_when_its_turn_comes() -> None:
    """Admitted in time, a prompt can still fall behind (a slow batch ahead of it); when its batch
    would end past its deadline it is refused then (RESOURCE_EXHAUSTED), not embedded for nobody."""
    from router_service.errors import Overloaded

    done: list[int] = []

    async def embed(items: list[int]) -> tuple[np.ndarray, None]:
        await asyncio.sleep(0.3 if items == [1] else 0.1 * len(items))  # item 1: slower than the rate says
        done.extend(items)
        return np.asarray(items, dtype=float), None

    batcher: MicroBatcher[int, None] = MicroBatcher(embed, max_batch=1)
    loop = asyncio.get_running_loop()
    try:
        for _ in range(3):  # learns the rate, about 10 items a second, from enough batches to trust it
            await batcher.submit([0])
        now = loop.time()
        results = await asyncio.gather(
            batcher.submit([1]), batcher.submit([2], deadline=now + 0.25), batcher.submit([3], deadline=now + 5),
            return_exceptions=True,
        )
    finally:
        await batcher.aclose()
    assert isinstance(results[1], Overloaded) and "deadline would pass" in str(results[1])  # admitted: 0.2 s < 0.25 s
    assert done == [0, 0, 0, 1, 3]


async def test_one_slow_batch_does_not_make_an_idle_router_refuse_everything() -> None:
    """A cold first batch (onnxruntime's first run) leaves a poor rate estimate; with nothing queued
    the next prompt is still taken, whatever its deadline: refusing it would only leave the router idle."""
    async def embed(items: list[int]) -> tuple[np.ndarray, None]:
        await asyncio.sleep(0.4 if items == [0] else 0.01)
        return np.asarray(items, dtype=float), None

    batcher: MicroBatcher[int, None] = MicroBatcher(embed, max_batch=4)
    loop = asyncio.get_running_loop()
    try:
        await batcher.submit([0])  # the estimate: 2.5 items a second
        rows, _ = await batcher.submit([1], deadline=loop.time() + 0.2)  # "0.4 s of work" > 0.2 s, but none is queued
    finally:
        await batcher.aclose()
    assert rows.tolist() == [1.0]


class SlowEmbedder(CountingEmbedder):
    """One text a batch, 0.2 s each: a backlog builds at once."""

    def __init__(self, inner) -> None:
        super().__init__(inner)
        self.max_batch = 1

    async def embed(self, texts: list[str]) -> np.ndarray:
        await asyncio.sleep(0.2)
        return await super().embed(texts)


async def test_work_for_callers_that_gave_up_is_dropped(local_embedder, scorer, executor) -> None:
    """40 callers with 100 ms deadlines: once they have gone, their queued prompts are not embedded."""
    slow = SlowEmbedder(local_embedder)
    pipeline = ScoringPipeline(slow, [scorer], executor, cache_size=0, workers=1)

    async def caller(i: int) -> None:
        async with asyncio.timeout(0.1):
            await pipeline.scores([f"prompt {i}"])

    try:
        results = await asyncio.gather(*(caller(i) for i in range(40)), return_exceptions=True)
        await asyncio.sleep(0.6)  # time for three more batches, were any still queued
    finally:
        await pipeline.aclose()
    assert all(isinstance(r, TimeoutError) for r in results)
    assert len(slow.batches) <= 2  # the batch already running when they gave up, at most one more


async def test_a_full_queue_refuses_at_once(local_embedder, scorer, executor) -> None:
    from router_service.errors import Overloaded

    slow = SlowEmbedder(local_embedder)
    pipeline = ScoringPipeline(slow, [scorer], executor, cache_size=0, workers=1, max_queued=3)
    try:
        started = asyncio.get_running_loop().time()
        results = await asyncio.gather(*(pipeline.scores([f"p{i}"]) for i in range(8)), return_exceptions=True)
    finally:
        await pipeline.aclose()
    refused = [r for r in results if isinstance(r, Overloaded)]
    # All eight arrive before the first batch starts: three fit in the queue, five are refused.
    assert len(refused) == 5 and "limits.max_queued_prompts=3" in str(refused[0])
    assert sum(isinstance(r, tuple) for r in results) == 3
    assert asyncio.get_running_loop().time() - started < 1.5  # the refused ones did not wait their turn
