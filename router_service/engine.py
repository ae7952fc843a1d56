"""The router's core, free of gRPC: plan, embed, score, choose.

The servicer wraps it for the network; ``router-service route`` and the
benchmarks use it in-process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager

import numpy as np

from routing_api.router.v1 import router_pb2

from .adapters import Embedder, open_embedder
from .adapters.scorer import OnnxScorer
from .config import RouterSettings
from .embedding import EmbeddingPipeline, MicroBatcher
from .errors import ConfigError, DeadlineExceeded, RouterError
from .routing import Plan, RoutingPolicy

__all__ = ["RouteEngine", "open_engine"]

logger = logging.getLogger(__name__)


class RouteEngine:
    def __init__(
        self, policy: RoutingPolicy, embeddings: EmbeddingPipeline, scoring: dict[str, MicroBatcher[np.ndarray]]
    ) -> None:
        self.policy = policy
        self.embeddings = embeddings
        self._scoring = scoring

    async def route(
        self, requests: Sequence[router_pb2.RouteRequest], timeout: float | None = None
    ) -> list[router_pb2.RouteResponse]:
        """Validate and route requests within ``timeout`` seconds (None: no limit)."""
        plans = [self.policy.plan(request) for request in requests]
        return await self.route_plans(plans, timeout)

    async def route_plans(self, plans: Sequence[Plan], timeout: float | None = None) -> list[router_pb2.RouteResponse]:
        started = time.perf_counter()
        stage = "embedding"
        try:
            async with asyncio.timeout(timeout):
                rows, cached = await self.embeddings.embed([plan.text for plan in plans])
                embedded = time.perf_counter()
                stage = "scoring"
                scores = await self._score(plans, rows)
        except TimeoutError:
            raise DeadlineExceeded(
                f"the call's deadline passed during {stage} after {(time.perf_counter() - started) * 1e3:.1f} ms"
            ) from None
        scored = time.perf_counter()
        timings = router_pb2.Timings(
            embed_ms=(embedded - started) * 1e3,
            score_ms=(scored - embedded) * 1e3,
            total_ms=(scored - started) * 1e3,
        )
        responses = [self._response(p, row, hit, timings) for p, row, hit in zip(plans, scores, cached, strict=True)]
        if logger.isEnabledFor(logging.DEBUG):
            for response in responses:
                logger.debug(
                    "routed to %s score=%.4f threshold=%.4f cached=%s embed_ms=%.2f score_ms=%.2f",
                    response.model, response.score, response.threshold, response.embedding_cached,
                    timings.embed_ms, timings.score_ms,
                )
        return responses

    async def _score(self, plans: Sequence[Plan], rows: np.ndarray) -> list[np.ndarray]:
        """Score every row with its plan's scorer: one batched run per scorer."""
        by_scorer: dict[str, list[int]] = {}
        for i, plan in enumerate(plans):
            by_scorer.setdefault(plan.scorer.name, []).append(i)
        out: list[np.ndarray] = [rows[0]] * len(plans)
        for name, indices in by_scorer.items():
            scores = await self._scoring[name].submit([rows[i] for i in indices])
            for i, row in zip(indices, scores, strict=True):
                out[i] = row
        return out

    def _response(
        self, plan: Plan, model_scores: np.ndarray, cached: bool, timings: router_pb2.Timings
    ) -> router_pb2.RouteResponse:
        choice = self.policy.choose(plan, model_scores)
        response = router_pb2.RouteResponse(
            model=choice.model,
            score=choice.score,
            threshold=choice.threshold,
            routed_strong=choice.routed_strong,
            scorer_name=plan.scorer.name,
            scorer_version=plan.scorer.version,
            timings=timings,
            embedding_cached=cached,
        )
        if plan.explicit_candidates:
            response.candidates.extend(
                router_pb2.CandidateScore(
                    model=c.model, scorer_model=c.scorer_model, cost=c.cost, strongest_win_rate=rate
                )
                for c, rate in zip(plan.candidates, choice.strongest_win_rates, strict=True)
            )
        return response

    def describe(self) -> router_pb2.DescribeResponse:
        policy = self.policy
        return router_pb2.DescribeResponse(
            default_scorer=policy.default_scorer,
            scorers=[
                router_pb2.ScorerInfo(
                    name=s.name,
                    version=s.version,
                    models=s.models,
                    strong_model=s.strong_model,
                    weak_model=s.weak_model,
                    embedder=s.embedder,
                    embedding_dim=s.embedding_dim,
                    thresholds={f"{share * 100:g}": t for share, t in s.thresholds.items()},
                )
                for s in policy.scorers.values()
            ],
            models=[
                router_pb2.ModelMapping(model=name, scorer_model=scorer_model, cost=cost)
                for name, (scorer_model, cost) in policy.models.items()
            ],
            strong_model=policy.strong_model,
            weak_model=policy.weak_model,
            default_threshold=policy.default_threshold(),
            embedder_backend=self.embeddings.embedder.backend,
        )


@asynccontextmanager
async def open_engine(settings: RouterSettings) -> AsyncIterator[RouteEngine]:
    """Open the embedder and scorers, check they fit together; close all on exit."""
    async with AsyncExitStack() as stack:
        executor = ThreadPoolExecutor(max_workers=(os.cpu_count() or 1) + 2, thread_name_prefix="router-onnx")
        stack.callback(executor.shutdown, wait=False, cancel_futures=True)
        scorers = {s.name: OnnxScorer(s.name, s.path, executor) for s in settings.scorers}
        embedder = open_embedder(settings.embedder, executor)
        embeddings = EmbeddingPipeline(embedder, settings.embedder.cache_size, _workers(settings, embedder))
        stack.push_async_callback(embeddings.aclose)  # closes the embedder too
        await _check_dimension(embedder, scorers)
        policy = RoutingPolicy(settings.routing, settings.limits, scorers)
        scoring: dict[str, MicroBatcher[np.ndarray]] = {}
        for name, scorer in scorers.items():
            scoring[name] = MicroBatcher(scorer.model_scores, max_batch=256)
            stack.push_async_callback(scoring[name].aclose)
        yield RouteEngine(policy, embeddings, scoring)


def _workers(settings: RouterSettings, embedder: Embedder) -> int:
    """Embedding batches in flight: one for onnxruntime (it uses every core), more over HTTP."""
    if embedder.backend == "local":
        return 1
    remote = settings.embedder.openai if embedder.backend == "openai" else settings.embedder.ollama
    return remote.max_concurrency


async def _check_dimension(embedder: Embedder, scorers: dict[str, OnnxScorer]) -> None:
    backend = embedder.backend
    if not embedder.dim:
        try:
            embedder.dim = int((await embedder.embed(["dimension probe"])).shape[1])
        except RouterError as exc:
            raise ConfigError(
                f"could not probe the embedding dimension: {exc}. Start that server, "
                f"or set embedder.{backend}.dim to start without probing"
            ) from exc
    for scorer in scorers.values():
        if embedder.dim != scorer.embedding_dim:
            raise ConfigError(
                f"embedding dimension mismatch: the {backend} embedder ({embedder.name}) gives {embedder.dim}, "
                f"scorer {scorer.name!r} ({scorer.embedder}) expects {scorer.embedding_dim}. "
                f"Set embedder.{backend}.model to the scorer's embedding model, or scorers.path to a scorer "
                f"trained on {embedder.name}"
            )
        if embedder.name != scorer.embedder:
            logger.warning(
                "scorer %r was trained on %s but the router embeds with %s: same dimension, "
                "but routing quality is only known for the former",
                scorer.name, scorer.embedder, embedder.name,
            )
