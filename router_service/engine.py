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
from .metrics import RouterMetrics
from .pipeline import ScoringPipeline
from .errors import ConfigError, DeadlineExceeded, RouterError
from .routing import Plan, RoutingPolicy

__all__ = ["RouteEngine", "open_engine"]

logger = logging.getLogger(__name__)


class RouteEngine:
    def __init__(self, policy: RoutingPolicy, pipeline: ScoringPipeline) -> None:
        self.policy = policy
        self.pipeline = pipeline
        self.metrics = RouterMetrics(set(policy.models), set(policy.scorers))

    async def route(
        self, requests: Sequence[router_pb2.RouteRequest], timeout: float | None = None
    ) -> list[router_pb2.RouteResponse]:
        """Validate and route requests within ``timeout`` seconds (None: no limit)."""
        plans = [self.policy.plan(request) for request in requests]
        return await self.route_plans(plans, timeout)

    async def route_plans(self, plans: Sequence[Plan], timeout: float | None = None) -> list[router_pb2.RouteResponse]:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                rows, cached, stages = await self.pipeline.scores([plan.text for plan in plans])
        except TimeoutError:
            raise DeadlineExceeded(
                f"the call's deadline passed after {(time.perf_counter() - started) * 1e3:.1f} ms "
                f"while embedding ({self.pipeline.embedder.name})"
            ) from None
        timings = router_pb2.Timings(
            embed_ms=stages.embed_ms, score_ms=stages.score_ms, total_ms=(time.perf_counter() - started) * 1e3
        )
        responses = [
            self._response(plan, row[self.pipeline.columns[plan.scorer.name]], hit, timings)
            for plan, row, hit in zip(plans, rows, cached, strict=True)
        ]
        for response in responses:
            self.metrics.decided(
                response.model, response.scorer_name, response.score, response.embedding_cached,
                timings.embed_ms, timings.score_ms,
            )
        if logger.isEnabledFor(logging.DEBUG):
            for response in responses:
                logger.debug(
                    "routed to %s score=%.4f threshold=%.4f cached=%s embed_ms=%.2f score_ms=%.2f",
                    response.model, response.score, response.threshold, response.embedding_cached,
                    timings.embed_ms, timings.score_ms,
                )
        return responses

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
            embedder_backend=self.pipeline.embedder.backend,
        )


@asynccontextmanager
async def open_engine(settings: RouterSettings) -> AsyncIterator[RouteEngine]:
    """Open the embedder and scorers, check they fit together; close all on exit."""
    async with AsyncExitStack() as stack:
        executor = ThreadPoolExecutor(max_workers=(os.cpu_count() or 1) + 2, thread_name_prefix="router-onnx")
        stack.callback(executor.shutdown, wait=False, cancel_futures=True)
        scorers = {s.name: OnnxScorer(s.name, s.resolve_path(settings.embedder.backend)) for s in settings.scorers}
        embedder = open_embedder(settings.embedder, executor)
        stack.push_async_callback(embedder.aclose)
        await _check_dimension(embedder, scorers)
        policy = RoutingPolicy(settings.routing, settings.limits, scorers)
        pipeline = ScoringPipeline(
            embedder, list(scorers.values()), executor,
            cache_size=settings.embedder.cache_size, workers=_workers(settings, embedder),
        )
        stack.push_async_callback(pipeline.aclose)
        yield RouteEngine(policy, pipeline)


def _workers(settings: RouterSettings, embedder: Embedder) -> int:
    """Embedding batches in flight: one for onnxruntime (it uses every core), more over HTTP."""
    if embedder.backend in ("local", "static"):
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
