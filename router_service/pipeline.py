"""Prompt text -> every scorer's model scores: LRU cache, single flight, micro-batches.

Concurrent requests for the same text share one computation; concurrent
requests for different texts are coalesced into one batch, so a burst of
routes costs one onnxruntime run (or one HTTP embedding call) instead of many.
With the local embedder a batch is embedded and scored in one worker-thread
job: one hop off the event loop per batch, none for a cache hit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

import numpy as np
from cachetools import LRUCache

from .adapters import Embedder
from .errors import Overloaded

__all__ = ["BatchWatch", "MicroBatcher", "ScoringPipeline", "StageTimes"]

logger = logging.getLogger(__name__)

Item = TypeVar("Item")
Meta = TypeVar("Meta")


@dataclass(frozen=True)
class StageTimes:
    """Milliseconds spent embedding and scoring the batch a request rode in."""

    embed_ms: float = 0.0
    score_ms: float = 0.0


CACHED = StageTimes()


@dataclass
class _Pending(Generic[Item, Meta]):
    items: Sequence[Item]
    deadline: float | None = None  # loop time
    future: asyncio.Future[tuple[np.ndarray, Meta]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class BatchWatch(Protocol):
    """What a batcher tells its observer (the router's metrics): each batch's size, each prompt it sheds."""

    def batch(self, size: int) -> None:
        """A batch of ``size`` prompts starts."""

    def shed(self, reason: str, count: int) -> None:
        """``count`` prompts refused (queue_full, deadline) or dropped while queued (late: their deadline would pass)."""


class _Unwatched:
    def batch(self, size: int) -> None:
        pass

    def shed(self, reason: str, count: int) -> None:
        pass


class MicroBatcher(Generic[Item, Meta]):
    """Runs ``fn`` on batches of whatever was submitted while the last batch ran.

    ``fn`` returns one row per item and a value shared by the batch. ``workers``
    batches may be in flight at once. A lone request is not held back waiting
    for company: batching comes only from requests that arrive while a batch
    runs, so latency at low load is that of one call.
    """

    def __init__(
        self,
        fn: Callable[[list[Item]], Awaitable[tuple[np.ndarray, Meta]]],
        max_batch: int,
        workers: int = 1,
        max_queued: int | None = None,
        watch: BatchWatch | None = None,
    ) -> None:
        self._fn = fn
        self._watch: BatchWatch = watch or _Unwatched()
        self._max_batch = max_batch
        self._workers = workers
        self._max_queued = max_queued
        self.queued = 0  # items waiting, not yet in a batch
        self._rate: float | None = None  # items a second one worker gets through (moving average)
        self._batches = 0  # batches that went into the estimate
        self._queue: asyncio.Queue[_Pending[Item, Meta]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    def admit(self, count: int, deadline: float | None = None) -> None:
        """Raise Overloaded when the queue is full, or when the work queued ahead would outlast
        ``deadline`` (loop time). Synchronous, so a caller can refuse before it builds anything."""
        if self._max_queued is not None and self.queued + count > self._max_queued:
            self._watch.shed("queue_full", count)
            raise Overloaded(
                f"the router is overloaded: {self.queued} prompts are waiting to be embedded "
                f"(limits.max_queued_prompts={self._max_queued}); retry shortly or add router replicas"
            )
        if deadline is not None and self._rate and self.queued:  # nothing queued: start now, whatever the estimate
            wait = (self.queued + count) / (self._rate * self._workers)
            left = deadline - asyncio.get_running_loop().time()
            if wait > left:
                self._watch.shed("deadline", count)
                raise Overloaded(
                    f"the router is overloaded: about {wait * 1e3:.0f} ms of work is queued ahead, more than the "
                    f"{max(left, 0) * 1e3:.0f} ms left of this call's deadline; retry shortly or add router replicas"
                )

    async def submit(self, items: Sequence[Item], deadline: float | None = None) -> tuple[np.ndarray, Meta]:
        """The rows for ``items``, or Overloaded at once (see ``admit``). Cancelling the caller drops its queued items."""
        self.admit(len(items), deadline)
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._work(), name=f"batcher-{i}") for i in range(self._workers)]
        pending: _Pending[Item, Meta] = _Pending(items, deadline)
        self._queue.put_nowait(pending)
        self.queued += len(items)
        return await pending.future

    async def _work(self) -> None:
        while True:
            batch = [await self._queue.get()]
            size = len(batch[0].items)
            while size < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
                size += len(batch[-1].items)
            self.queued -= size
            live = [p for p in batch if not p.future.done()]  # drop callers that gave up
            if self._rate and self._batches >= 3:  # and those it could only answer after their deadline: wasted work
                finish = asyncio.get_running_loop().time() + sum(len(p.items) for p in live) / self._rate
                for late in [p for p in live if p.deadline is not None and p.deadline < finish]:
                    self._watch.shed("late", len(late.items))
                    late.future.set_exception(Overloaded(
                        "the router is overloaded: this call's deadline would pass before its prompt is embedded; "
                        "retry shortly or add router replicas"
                    ))
                    live.remove(late)
            if live:
                await self._run(live)

    async def _run(self, batch: list[_Pending[Item, Meta]]) -> None:
        items = [item for pending in batch for item in pending.items]
        self._watch.batch(len(items))
        started = time.perf_counter()
        try:
            rows, meta = await self._fn(items)
        except Exception as exc:  # noqa: BLE001 - every waiter gets the batch's failure, whatever it is
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        rate = len(items) / max(time.perf_counter() - started, 1e-6)
        self._rate = rate if self._rate is None else 0.8 * self._rate + 0.2 * rate
        self._batches += 1
        start = 0
        for pending in batch:
            end = start + len(pending.items)
            if not pending.future.done():
                pending.future.set_result((rows[start:end], meta))
            start = end

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []


class _Flight:
    """One text being computed: its result, and how many callers wait for it."""

    def __init__(self) -> None:
        self.future: asyncio.Future[tuple[np.ndarray, StageTimes]] = asyncio.get_running_loop().create_future()
        # Nobody may await a failed shared future; mark its error as seen.
        self.future.add_done_callback(lambda f: f.cancelled() or f.exception())
        self.waiters = 0
        self.fill: asyncio.Task[None] | None = None  # the task computing it, with the other texts of its call


class RowHead(Protocol):
    """What maps an embedding to columns of a row: a scorer (its models' scores), the task detector (its parts)."""

    name: str
    models: tuple[str, ...]

    def model_scores_sync(self, embeddings: np.ndarray) -> np.ndarray: ...


class ScoringPipeline:
    """Each text's model scores under every scorer, side by side in one row.

    ``columns[scorer name]`` is the slice of a row that holds that scorer's
    ``model_scores``.
    """

    def __init__(
        self,
        embedder: Embedder,
        scorers: Sequence[RowHead],
        executor: ThreadPoolExecutor,
        *,
        cache_size: int,
        workers: int | None = None,
        max_queued: int | None = None,
        watch: BatchWatch | None = None,
    ) -> None:
        self.embedder = embedder
        self._scorers = list(scorers)
        self._executor = executor
        self.columns: dict[str, slice] = {}
        start = 0
        for scorer in self._scorers:
            self.columns[scorer.name] = slice(start, start + len(scorer.models))
            start += len(scorer.models)
        self._cache: LRUCache[str, np.ndarray] | None = LRUCache(cache_size) if cache_size else None
        self._inflight: dict[str, _Flight] = {}
        self._fills: dict[asyncio.Task[None], list[_Flight]] = {}  # each fill and the texts it computes
        # Batches in flight: one for in-process work (onnxruntime uses every core), more over HTTP.
        if workers is None:
            workers = 1 if embedder.runs == "in_process" else embedder.max_concurrency
        self._batcher: MicroBatcher[str, StageTimes] = MicroBatcher(
            self._compute, embedder.max_batch, workers, max_queued, watch
        )

    @property
    def queued(self) -> int:
        """Prompts waiting to be embedded, not yet in a batch."""
        return self._batcher.queued

    async def scores(
        self, texts: Sequence[str], deadline: float | None = None
    ) -> tuple[np.ndarray, list[bool], StageTimes]:
        """Rows for ``texts``, whether each came from the cache, and the slowest batch's stage times.

        A caller that gives up (its deadline, a cancelled call) stops waiting; work nobody waits
        for any more is dropped while it is still queued."""
        rows: list[np.ndarray | None] = [None] * len(texts)
        cached = [False] * len(texts)
        waits: dict[int, _Flight] = {}
        missing: list[str] = []
        for i, text in enumerate(texts):
            hit = self._cache.get(text) if self._cache is not None else None
            if hit is not None:
                rows[i], cached[i] = hit, True
                continue
            flight = self._inflight.get(text)
            if flight is None:
                flight = self._inflight[text] = _Flight()
                missing.append(text)
            waits[i] = flight
        if missing:
            try:
                self._batcher.admit(len(missing), deadline)  # refuse before any task or future exists
            except Overloaded:
                for text in missing:
                    del self._inflight[text]
                raise
            task = asyncio.create_task(self._fill(missing, deadline))
            self._fills[task] = [self._inflight[text] for text in missing]
            for flight in self._fills[task]:
                flight.fill = task
            task.add_done_callback(self._fills.pop)
        mine = list({id(f): f for f in waits.values()}.values())
        for flight in mine:
            flight.waiters += 1
        try:
            times = CACHED
            for i, flight in waits.items():
                # shield: one caller's cancellation must not fail the others sharing it.
                rows[i], batch_times = await asyncio.shield(flight.future)
                times = max(times, batch_times, key=lambda t: t.embed_ms + t.score_ms)
        finally:
            for flight in mine:
                flight.waiters -= 1
            self._drop_abandoned({f.fill for f in mine if not f.waiters and f.fill is not None})
        return np.stack(rows), cached, times  # type: ignore[arg-type]

    def _drop_abandoned(self, fills: set[asyncio.Task[None]]) -> None:
        """Cancel each of ``fills`` none of whose texts anyone waits for (its queued batch is skipped)."""
        for task in fills:
            flights = self._fills.get(task, [])
            if task.done() or any(f.waiters for f in flights):
                continue
            for text, flight in list(self._inflight.items()):
                if flight in flights:  # a later caller of the same text starts afresh
                    del self._inflight[text]
            task.cancel()

    async def warm_up(self) -> np.ndarray:
        """One batch through embedder and scorers before serving: onnxruntime's first run allocates and
        plans (hundreds of ms), which would otherwise land on the first caller's deadline. Its rows
        are the smoke test of a scorer reload."""
        rows, _ = await self._compute(["warm-up: how are you today?", "Prove that there are infinitely many primes."])
        return rows

    async def _compute(self, texts: list[str]) -> tuple[np.ndarray, StageTimes]:
        loop = asyncio.get_running_loop()
        embedder = self.embedder
        if embedder.runs == "in_process":  # one worker job: embed and score together
            return await loop.run_in_executor(self._executor, self._embed_and_score, embedder.embed_sync, texts)
        started = time.perf_counter()
        embeddings = await embedder.embed(texts)
        embedded = time.perf_counter()
        rows = await loop.run_in_executor(self._executor, self._score_sync, embeddings)
        return rows, StageTimes((embedded - started) * 1e3, (time.perf_counter() - embedded) * 1e3)

    def _embed_and_score(
        self, embed_sync: Callable[[list[str]], np.ndarray], texts: list[str]
    ) -> tuple[np.ndarray, StageTimes]:
        started = time.perf_counter()
        embeddings = embed_sync(texts)
        embedded = time.perf_counter()
        rows = self._score_sync(embeddings)
        return rows, StageTimes((embedded - started) * 1e3, (time.perf_counter() - embedded) * 1e3)

    def _score_sync(self, embeddings: np.ndarray) -> np.ndarray:
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        return np.hstack([scorer.model_scores_sync(embeddings) for scorer in self._scorers])

    async def _fill(self, texts: list[str], deadline: float | None) -> None:
        futures = [self._inflight[text].future for text in texts]
        try:
            matrix, times = await self._batcher.submit(texts, deadline)
        except Exception as exc:  # noqa: BLE001 - every waiter sees it; nothing is cached
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
                    future.set_result((row, times))
        finally:
            for text, future in zip(texts, futures, strict=True):
                flight = self._inflight.get(text)
                if flight is not None and flight.future is future:
                    del self._inflight[text]

    async def aclose(self) -> None:
        for task in list(self._fills):
            task.cancel()
        await asyncio.gather(*self._fills, return_exceptions=True)
        await self._batcher.aclose()
