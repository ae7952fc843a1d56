"""The router's core, free of gRPC: plan, embed, score, choose.

It takes and returns the domain types of ``domain.py``; the servicer wraps it
for the network, and ``router-service route`` and the benchmarks use it in-process.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager

import numpy as np

from .adapters import AsyncEmbedder, open_embedder
from .adapters.scorer import OnnxScorer
from .config import RouterSettings
from .domain import CandidateScore, Decision, Description, ModelMapping, RouteQuery, ScorerDescription, Timings
from .errors import ConfigError, DeadlineExceeded, RouterError, Uncalibrated
from .metrics import RouterMetrics
from .pipeline import ScoringPipeline
from .routing import Plan, RoutingPolicy

__all__ = ["RouteEngine", "open_engine"]

logger = logging.getLogger(__name__)


class RouteEngine:
    def __init__(self, policy: RoutingPolicy, pipeline: ScoringPipeline) -> None:
        self.policy = policy
        self.pipeline = pipeline
        self.metrics = RouterMetrics(set(policy.models), set(policy.scorers))

    async def route(self, queries: Sequence[RouteQuery], timeout: float | None = None) -> list[Decision]:
        """Validate and route queries within ``timeout`` seconds (None: no limit)."""
        plans = [self.policy.plan(query) for query in queries]
        return await self.route_plans(plans, timeout)

    async def route_plans(self, plans: Sequence[Plan], timeout: float | None = None) -> list[Decision]:
        started = time.perf_counter()
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        try:
            async with asyncio.timeout(timeout):
                rows, cached, stages = await self.pipeline.scores([plan.text for plan in plans], deadline)
        except TimeoutError:
            raise DeadlineExceeded(
                f"the call's deadline passed after {(time.perf_counter() - started) * 1e3:.1f} ms "
                f"while embedding ({self.pipeline.embedder.name})"
            ) from None
        timings = Timings(stages.embed_ms, stages.score_ms, (time.perf_counter() - started) * 1e3)
        decisions = [
            self._decide(plan, row[self.pipeline.columns[plan.scorer.name]], hit, timings)
            for plan, row, hit in zip(plans, rows, cached, strict=True)
        ]
        for decision in decisions:
            self.metrics.decided(
                decision.model, decision.scorer_name, decision.score, decision.embedding_cached,
                timings.embed_ms, timings.score_ms,
            )
        if logger.isEnabledFor(logging.DEBUG):
            for decision in decisions:
                logger.debug(
                    "routed to %s score=%.4f threshold=%.4f cached=%s embed_ms=%.2f score_ms=%.2f",
                    decision.model, decision.score, decision.threshold, decision.embedding_cached,
                    timings.embed_ms, timings.score_ms,
                )
        return decisions

    def _decide(self, plan: Plan, model_scores: np.ndarray, cached: bool, timings: Timings) -> Decision:
        choice = self.policy.choose(plan, model_scores)
        realised = self.policy.observe(plan, model_scores, choice.routed_strong)
        if self.policy.budget is not None:
            self.metrics.budget(self.policy.budget.left, choice.budget_limited)
        if realised is not None and plan.share is not None:
            self.metrics.share(plan.scorer.name, plan.share, realised, plan.threshold)
        candidates: tuple[CandidateScore, ...] = ()
        if plan.explicit_candidates:
            candidates = tuple(
                CandidateScore(c.model, c.scorer_model, c.cost, rate)
                for c, rate in zip(plan.candidates, choice.strongest_win_rates, strict=True)
            )
        return Decision(
            model=choice.model,
            score=choice.score,
            threshold=choice.threshold,
            routed_strong=choice.routed_strong,
            scorer_name=plan.scorer.name,
            scorer_version=plan.scorer.version,
            timings=timings,
            embedding_cached=cached,
            candidates=candidates,
            budget_limited=choice.budget_limited,
        )

    def _live_thresholds(self, scorer: OnnxScorer) -> dict[str, float]:
        """Thresholds on recent traffic for the calibrated shares; empty until warmed up (or off)."""
        live = self.policy.live.get(scorer.name)
        if live is None or not live.ready:
            return {}
        return {f"{share * 100:g}": t for share in scorer.thresholds if (t := live.threshold(share)) is not None}

    def describe(self) -> Description:
        policy = self.policy
        return Description(
            default_scorer=policy.default_scorer,
            scorers=tuple(
                ScorerDescription(
                    name=s.name,
                    version=s.version,
                    models=s.models,
                    strong_model=s.strong_model,
                    weak_model=s.weak_model,
                    embedder=s.embedder,
                    embedding_dim=s.embedding_dim,
                    thresholds={f"{share * 100:g}": t for share, t in s.thresholds.items()},
                    live_thresholds=self._live_thresholds(s),
                    live_samples=policy.live[s.name].samples if s.name in policy.live else 0,
                )
                for s in policy.scorers.values()
            ),
            models=tuple(
                ModelMapping(name, scorer_model, cost) for name, (scorer_model, cost) in policy.models.items()
            ),
            strong_model=policy.strong_model,
            weak_model=policy.weak_model,
            default_threshold=_or_nan(policy.default_threshold),
            embedder_backend=self.pipeline.embedder.backend,
        )


@asynccontextmanager
async def open_engine(settings: RouterSettings) -> AsyncIterator[RouteEngine]:
    """Open the embedder and scorers, check they fit together; close all on exit."""
    async with AsyncExitStack() as stack:
        executor = ThreadPoolExecutor(max_workers=(os.cpu_count() or 1) + 2, thread_name_prefix="router-onnx")
        stack.callback(executor.shutdown, wait=False, cancel_futures=True)
        scorers = {s.name: OnnxScorer(s.name, s.resolve_path(settings.embedder.backend)) for s in settings.scorers}
        embedder = open_embedder(settings.embedder)
        if embedder.runs == "async":
            stack.push_async_callback(embedder.aclose)
            await _probe_dimension(embedder)
        _check_dimension(embedder.backend, embedder.name, embedder.dim, scorers)
        policy = RoutingPolicy(settings.routing, settings.limits, scorers)
        pipeline = ScoringPipeline(
            embedder, list(scorers.values()), executor,
            cache_size=settings.embedder.cache_size, max_queued=settings.limits.max_queued_prompts,
        )
        stack.push_async_callback(pipeline.aclose)
        if embedder.runs == "in_process":  # a remote embedder was probed above, or is probed by the first call
            await pipeline.warm_up()
        yield RouteEngine(policy, pipeline)


async def _probe_dimension(embedder: AsyncEmbedder) -> None:
    if embedder.dim:
        return
    try:
        embedder.dim = int((await embedder.embed(["dimension probe"])).shape[1])
    except RouterError as exc:
        raise ConfigError(
            f"could not probe the embedding dimension: {exc}. Start that server, "
            f"or set embedder.{embedder.backend}.dim to start without probing"
        ) from exc


def _check_dimension(backend: str, name: str, dim: int, scorers: dict[str, OnnxScorer]) -> None:
    for scorer in scorers.values():
        if dim != scorer.embedding_dim:
            raise ConfigError(
                f"embedding dimension mismatch: the {backend} embedder ({name}) gives {dim}, "
                f"scorer {scorer.name!r} ({scorer.embedder}) expects {scorer.embedding_dim}. "
                f"Set embedder.{backend}.model to the scorer's embedding model, or scorers.path to a scorer "
                f"trained on {name}"
            )
        if name != scorer.embedder:
            logger.warning(
                "scorer %r was trained on %s but the router embeds with %s: same dimension, "
                "but routing quality is only known for the former",
                scorer.name, scorer.embedder, name,
            )


def _or_nan(threshold: Callable[[], float]) -> float:
    """NaN where no default threshold exists yet (a share policy over an uncalibrated scorer)."""
    try:
        return threshold()
    except Uncalibrated:
        return math.nan
