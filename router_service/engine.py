"""The router's core, free of gRPC: plan, embed, score, choose.

It takes and returns the domain types of ``domain.py``; the servicer wraps it
for the network, and ``router-service route`` and the benchmarks use it in-process.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from service_core.cpus import usable_cpus
from service_core.quota import Check, Counters

from .adapters import AsyncEmbedder, Embedder, open_embedder
from .adapters.scorer import OnnxScorer
from .adapters.task_detector import TaskDetector
from .config import RouterSettings, ScorerSettings, check_scorers
from .domain import (
    CandidateScore,
    Decision,
    Description,
    ModelMapping,
    RouteQuery,
    ScorerDescription,
    Timings,
)
from .errors import ConfigError, DeadlineExceeded, InvalidRequest, ReloadRejected, RouterError, Uncalibrated
from .metrics import RouterMetrics
from .pipeline import RowHead, ScoringPipeline
from .routing import Plan, RoutingPolicy
from .rules import Rule
from .shadow import ShadowRecord

__all__ = ["Reloaded", "RouteEngine", "open_engine"]

logger = logging.getLogger(__name__)
PREVIEWED_KEPT = 10_000  # prompts remembered as embedded by a preview only (the embedding cache's order of size)


@dataclass(frozen=True)
class Reloaded:
    description: Description
    swapped: tuple[str, ...]  # scorers whose file changed and were swapped in
    warnings: tuple[str, ...] = ()  # true of what now serves, and worth a look: a scorer trained for another pair


def pair_warnings(scorers: Mapping[str, OnnxScorer], strong: str, weak: str) -> tuple[str, ...]:
    """Scorers that know the routed models by name but were trained to choose between another pair: they answer
    a question routing is not asking (a scorer from public benchmarks, which names none of them, is fine)."""
    return tuple(
        f"scorer {s.name!r} ({s.path}) was trained for {s.strong_model} (strong) / {s.weak_model} (weak), but routing "
        f"uses {strong} / {weak} (routing.strong_model / weak_model): retrain for this pair, or change routing"
        for s in scorers.values()
        if {strong, weak} & set(s.models) and (s.strong_model, s.weak_model) != (strong, weak)
    )


class _Generation:
    """One set of scorers with its policy and pipeline. A reload builds the next one; calls in
    flight hold theirs to the end, and a retired one closes when its last call leaves."""

    def __init__(self, policy: RoutingPolicy, pipeline: ScoringPipeline, shadows: dict[tuple[str, str], ShadowRecord]):
        self.policy = policy
        self.pipeline = pipeline
        self.shadows = shadows  # (serving, shadow) -> record
        self.shadows_of: dict[str, list[OnnxScorer]] = {}
        for serving, shadow in shadows:
            self.shadows_of.setdefault(serving, []).append(policy.scorers[shadow])
        self.active = 0
        self.retired = False


class RouteEngine:
    def __init__(
        self,
        settings: RouterSettings,
        embedder: Embedder,
        executor: ThreadPoolExecutor,
        scorers: dict[str, OnnxScorer],
        shadows: dict[str, str],
        counters: Counters | None = None,
        detector: TaskDetector | None = None,
    ) -> None:
        self._settings = settings
        self.detector = detector  # the background-task detector, a row head beside the scorers
        # The strong-call budget (routing.strong_budget): per process, or fleet-wide on Redis. It spans reloads.
        self.counters = counters or Counters(settings.redis)
        self._embedder = embedder
        self._executor = executor
        policy = RoutingPolicy(settings.routing, settings.limits, scorers, shadows=shadows)
        self.metrics = RouterMetrics(set(policy.models), set(scorers))
        self._current = self._generation(policy)
        self.metrics.queued.set_function(lambda: self._current.pipeline.queued)
        budget = settings.routing.strong_budget
        self.metrics.budget_left.set(math.nan if budget is None else budget)  # NaN: no budget (not "none left")
        self.metrics.serving(self._serving_versions())
        self._closing: set[asyncio.Task[None]] = set()
        self._reload_lock = asyncio.Lock()
        # Prompts embedded for a preview only: their cache entry must not make the first real Route of the same
        # prompt a "repeat" that stays out of the live-share window (a preview leaves no trace on a decision).
        self._previewed: OrderedDict[str, None] = OrderedDict()

    @property
    def policy(self) -> RoutingPolicy:
        """The policy new calls use (a reload replaces it)."""
        return self._current.policy

    @property
    def pipeline(self) -> ScoringPipeline:
        return self._current.pipeline

    def _generation(self, policy: RoutingPolicy, carry: _Generation | None = None) -> _Generation:
        settings = self._settings
        heads: list[RowHead] = list(policy.scorers.values())
        if self.detector is not None:
            heads.append(self.detector)
        pipeline = ScoringPipeline(
            self._embedder, heads, self._executor,
            cache_size=settings.embedder.cache_size, max_queued=settings.limits.max_queued_prompts,
            watch=self.metrics,
        )
        shadows = {}
        for shadow, serving in policy.shadow_of.items():
            old = carry.shadows.get((serving, shadow)) if carry is not None else None
            unchanged = carry is not None and all(
                carry.policy.scorers.get(name) is policy.scorers[name] for name in (serving, shadow)
            )
            shadows[serving, shadow] = old if old is not None and unchanged else ShadowRecord()
        return _Generation(policy, pipeline, shadows)

    async def route(
        self, queries: Sequence[RouteQuery], timeout: float | None = None, *, indexed: bool = False
    ) -> list[Decision]:
        """Validate and route queries within ``timeout`` seconds (None: no limit), on the scorers serving
        now; ``indexed``: name the query in validation errors (``requests[3]: ...``)."""
        generation = self._current
        generation.active += 1
        try:
            plans = []
            for i, query in enumerate(queries):
                try:
                    plans.append(generation.policy.plan(query))
                except InvalidRequest as exc:
                    if not indexed:
                        raise
                    raise InvalidRequest(f"requests[{i}]: {exc}") from None
            return await self._route_plans(generation, plans, timeout)
        finally:
            generation.active -= 1
            if generation.retired and not generation.active:
                self._close(generation)

    async def _route_plans(self, generation: _Generation, plans: Sequence[Plan], timeout: float | None) -> list[Decision]:
        started = time.perf_counter()
        pipeline = generation.pipeline
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        scored = [plan for plan in plans if plan.rule is None]  # a rule's prompts are not embedded
        extra = self._detector_texts(scored)  # the detector's other texts: long words' ends, system prompts
        embed_ms = score_ms = 0.0
        rows: Sequence[np.ndarray] | np.ndarray = ()
        cached: Sequence[bool] = ()
        more: dict[str, np.ndarray] = {}
        if scored:
            try:
                async with asyncio.timeout(timeout):
                    rows, cached, stages = await pipeline.scores([plan.text for plan in scored] + extra, deadline)
            except TimeoutError:
                raise DeadlineExceeded(
                    f"the call's deadline passed after {(time.perf_counter() - started) * 1e3:.1f} ms "
                    f"while embedding ({pipeline.embedder.name})"
                ) from None
            embed_ms, score_ms = stages.embed_ms, stages.score_ms
            more = dict(zip(extra, rows[len(scored):], strict=True))
            rows, cached = rows[: len(scored)], cached[: len(scored)]
        timings = Timings(embed_ms, score_ms, (time.perf_counter() - started) * 1e3)
        cached = [self._first_real(plan, hit) for plan, hit in zip(scored, cached, strict=True)]
        results = iter(zip(rows, cached, strict=True))
        decisions = [
            self._by_rule(generation, plan, plan.rule, timings) if plan.rule is not None
            else self._decide(generation, plan, *next(results), timings, more)
            for plan in plans
        ]
        decisions = [await self._within_budget(plan, d) for plan, d in zip(plans, decisions, strict=True)]
        for plan, decision in zip(plans, decisions, strict=True):
            if plan.preview:
                continue
            if decision.rule:
                self.metrics.ruled(decision.model, decision.rule)
                continue
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

    def _by_rule(self, generation: _Generation, plan: Plan, rule: Rule, timings: Timings) -> Decision:
        choice = generation.policy.by_rule(plan, rule)
        return Decision(
            model=choice.model, score=0.0, threshold=choice.threshold, routed_strong=choice.routed_strong,
            scorer_name="", scorer_version="", timings=timings, embedding_cached=False,
            budget_limited=choice.budget_limited, rule=rule.name,
        )

    def _first_real(self, plan: Plan, cached: bool) -> bool:
        """Whether the prompt counts as seen before: not when only a preview embedded it."""
        if plan.preview:
            if not cached:
                self._previewed[plan.text] = None
                if len(self._previewed) > PREVIEWED_KEPT:
                    self._previewed.popitem(last=False)
            return cached
        if cached and plan.text in self._previewed:
            del self._previewed[plan.text]
            return False
        return cached

    def _detector_texts(self, plans: Sequence[Plan]) -> list[str]:
        if self.detector is None:
            return []
        wanted = (t for plan in plans if plan.view is not None for t in (plan.view.tail, plan.view.system))
        return list(dict.fromkeys(t for t in wanted if t))

    def _background(self, detector: TaskDetector, plan: Plan, row: np.ndarray, more: Mapping[str, np.ndarray],
                    columns: slice) -> bool:
        """Whether the detector takes the request for a client's own background task."""
        view = plan.view
        if view is None:
            return False
        tail = more[view.tail][columns] if view.tail else None
        system = more[view.system][columns] if view.system else None
        return detector.probability(view, row[columns], tail, system) >= detector.threshold

    def _decide(
        self, generation: _Generation, plan: Plan, row: np.ndarray, cached: bool, timings: Timings,
        more: Mapping[str, np.ndarray],
    ) -> Decision:
        policy, columns = generation.policy, generation.pipeline.columns
        model_scores = row[columns[plan.scorer.name]]
        choice = policy.choose(plan, model_scores)
        detector = self.detector
        if detector is not None and self._background(detector, plan, row, more, columns[detector.name]):
            # A client's task: the cheapest model, its score kept for the record; it stays out of the live-share
            # window and the shadow comparison, as a rule's prompts do
            return Decision(
                model=plan.candidates[0].model, score=choice.score, threshold=choice.threshold, routed_strong=False,
                scorer_name=plan.scorer.name, scorer_version=plan.scorer.version, timings=timings,
                embedding_cached=cached, rule=detector.name,
            )
        # The live-share window estimates the spread of distinct prompts: a repeat (a tool loop re-sending its
        # last user message, a client's retry) or a caller's own threshold would tilt it for everyone.
        realised = policy.observe(plan, model_scores, choice.routed_strong) if plan.observed and not cached else None
        if realised is not None and plan.share is not None:
            calibrated = _or_nan(lambda: plan.scorer.threshold_for_share(plan.share or 0.0))
            self.metrics.share(plan.scorer.name, plan.share, realised, plan.threshold, calibrated)
        if not plan.explicit_candidates and not plan.preview:  # a pair: the score is the serving scorer's win rate
            for shadow in generation.shadows_of.get(plan.scorer.name, ()):
                self._compare(generation, plan, shadow, row, choice.score, choice.routed_strong)
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

    async def _within_budget(self, plan: Plan, decision: Decision) -> Decision:
        """A strong choice within the asking service's budget for its caller (``strong_spent``) and the router's
        own (routing.strong_budget); past either, the cheapest candidate, flagged budget_limited."""
        if not decision.routed_strong:
            return decision
        routing = self._settings.routing
        allowed = not plan.strong_spent
        if allowed and routing.strong_budget is not None and plan.preview:  # room for one more? nothing is taken
            check = Check.room("router:strong", routing.strong_budget, routing.budget_window_s)
            allowed = (await self.counters.take_all([check]))[0].allowed
        elif allowed and routing.strong_budget is not None:
            taken = await self.counters.take("router:strong", 1, routing.strong_budget, routing.budget_window_s)
            allowed = taken.allowed
            self.metrics.budget(max(routing.strong_budget - taken.used, 0), not allowed, taken.enforced)
        elif not allowed and not plan.preview:
            self.metrics.budget(None, True, True)
        if allowed:
            return decision
        return replace(decision, model=plan.candidates[0].model, routed_strong=False, budget_limited=True)

    def _compare(
        self, generation: _Generation, plan: Plan, shadow: OnnxScorer, row: np.ndarray, serving_rate: float,
        serving_strong: bool,
    ) -> None:
        """Score the prompt with a shadow scorer and record whether it would have chosen alike."""
        shadow_rate = shadow.win_rate(row[generation.pipeline.columns[shadow.name]])
        shadow_strong = generation.policy.shadow_choice(plan, shadow, shadow_rate)
        record = generation.shadows[plan.scorer.name, shadow.name]
        record.add(serving_rate, shadow_rate, serving_strong, shadow_strong)
        self.metrics.shadow(plan.scorer.name, shadow.name, shadow_strong, serving_strong, record.agreement, record.correlation)

    # -- live reload ------------------------------------------------------------------

    async def reload(
        self, paths: Mapping[str, Path] | None = None, scorers: Sequence[ScorerSettings] | None = None
    ) -> Reloaded:
        """Open, validate and swap in scorer files; on any failure keep serving what serves now.

        ``paths``: new files for some configured scorers (others are re-read from their current
        file); ``scorers``: a whole new scorer list (SIGHUP, from the config file)."""
        async with self._reload_lock:
            current = self._current
            generation: _Generation | None = None
            try:
                specs = self._reload_specs(current.policy, paths, scorers)
                loop = asyncio.get_running_loop()
                opened = await loop.run_in_executor(self._executor, _open_scorers, specs, current.policy.scorers)
                _check_dimension(self._embedder.backend, self._embedder.name, self._embedder.dim, opened)
                policy = RoutingPolicy(
                    self._settings.routing, self._settings.limits, opened,
                    shadows={name: shadow for name, (_, shadow) in specs.items() if shadow}, carry=current.policy,
                )
                generation = self._generation(policy, carry=current)
                rows = await generation.pipeline.warm_up()  # the smoke route: embed, score with every new scorer
                if not np.isfinite(rows).all():
                    raise ConfigError("a scorer gave a non-finite score for the smoke prompts")
            except InvalidRequest:
                raise  # the request itself is wrong (an unknown scorer name): nothing was tried
            except (ConfigError, RouterError) as exc:
                self.metrics.reloads.labels(outcome="rejected").inc()
                logger.warning("scorer reload rejected, the serving scorers stay: %s", exc)
                if generation is not None:
                    self._close(generation)
                raise ReloadRejected(f"scorer reload rejected, the serving scorers stay: {exc}") from None
            swapped = tuple(name for name, scorer in opened.items() if current.policy.scorers.get(name) is not scorer)
            self._current = generation
            self.metrics.track_scorers(set(opened))
            self.metrics.serving(self._serving_versions())
            self.metrics.reloads.labels(outcome="swapped" if swapped else "unchanged").inc()
            current.retired = True
            if not current.active:
                self._close(current)
            logger.info(
                "scorers reloaded: %s", ", ".join(f"{s.name} {s.version} ({s.path})" for s in opened.values())
                + (f"; swapped in: {', '.join(swapped)}" if swapped else "; no file had changed")
            )
            warnings = pair_warnings(opened, self._settings.routing.strong_model, self._settings.routing.weak_model)
            for warning in warnings:
                logger.warning("%s", warning)
            return Reloaded(self.describe(), swapped, warnings)

    def _reload_specs(
        self, policy: RoutingPolicy, paths: Mapping[str, Path] | None, scorers: Sequence[ScorerSettings] | None
    ) -> dict[str, tuple[Path, str | None]]:
        if scorers is not None:
            try:
                check_scorers(tuple(scorers))
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
            backend = self._settings.embedder.backend
            return {s.name: (s.resolve_path(backend), s.shadow_of) for s in scorers}
        specs = {name: (scorer.path, policy.shadow_of.get(name)) for name, scorer in policy.scorers.items()}
        for name, path in (paths or {}).items():
            if name not in specs:
                raise InvalidRequest(f"paths: scorer {name!r} is not configured; configured: {sorted(specs)}")
            specs[name] = (Path(path), specs[name][1])
        return specs

    def _serving_versions(self) -> list[tuple[str, str, str]]:
        policy = self._current.policy
        return [
            (name, scorer.version, "shadow" if name in policy.shadow_of else "serving")
            for name, scorer in policy.scorers.items()
        ]

    def _close(self, generation: _Generation) -> None:
        task = asyncio.get_running_loop().create_task(generation.pipeline.aclose())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        self._close(self._current)
        await asyncio.gather(*self._closing, return_exceptions=True)

    # -- description ---------------------------------------------------------------------

    def _live_thresholds(self, scorer: OnnxScorer) -> dict[str, float]:
        """Thresholds on recent traffic (of callers that name no one) for the calibrated shares; empty until
        warmed up (or off)."""
        windows = self.policy.live.get(scorer.name)
        live = windows.peek("") if windows is not None else None
        if live is None or not live.ready:
            return {}
        return {f"{share * 100:g}": t for share in scorer.thresholds if (t := live.threshold(share)) is not None}

    def describe(self) -> Description:
        generation = self._current
        policy = generation.policy
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
                    live_samples=_samples(policy, s.name),
                    path=str(s.path),
                    shadow_of=policy.shadow_of.get(s.name, ""),
                    shadow=(
                        generation.shadows[policy.shadow_of[s.name], s.name].stats() if s.name in policy.shadow_of else None
                    ),
                )
                for s in policy.scorers.values()
            ),
            models=tuple(
                ModelMapping(name, scorer_model, cost) for name, (scorer_model, cost) in policy.models.items()
            ),
            strong_model=policy.strong_model,
            weak_model=policy.weak_model,
            default_threshold=_or_nan(policy.default_threshold),
            embedder_backend=generation.pipeline.embedder.backend,
            warnings=pair_warnings(policy.scorers, policy.strong_model, policy.weak_model),
        )


def _samples(policy: RoutingPolicy, scorer: str) -> int:
    windows = policy.live.get(scorer)
    live = windows.peek("") if windows is not None else None
    return live.samples if live is not None else 0


def _open_scorers(specs: dict[str, tuple[Path, str | None]], current: Mapping[str, OnnxScorer]) -> dict[str, OnnxScorer]:
    """Each scorer file of ``specs``; one whose file is unchanged is kept as it is (in a worker thread)."""
    opened = {}
    for name, (path, _) in specs.items():
        old = current.get(name)
        opened[name] = old if old is not None and old.is_file(path) else OnnxScorer(name, path)
    return opened


@asynccontextmanager
async def open_engine(settings: RouterSettings) -> AsyncIterator[RouteEngine]:
    """Open the embedder and scorers, check they fit together; close all on exit."""
    async with AsyncExitStack() as stack:
        executor = ThreadPoolExecutor(max_workers=usable_cpus() + 2, thread_name_prefix="router-onnx")
        stack.callback(executor.shutdown, wait=False, cancel_futures=True)
        scorers = {s.name: OnnxScorer(s.name, s.resolve_path(settings.embedder.backend)) for s in settings.scorers}
        embedder = open_embedder(settings.embedder)
        if embedder.runs == "async":
            stack.push_async_callback(embedder.aclose)
            await _probe_dimension(embedder)
        _check_dimension(embedder.backend, embedder.name, embedder.dim, scorers)
        detector = _open_detector(settings, embedder.backend, embedder.dim)
        for warning in pair_warnings(scorers, settings.routing.strong_model, settings.routing.weak_model):
            logger.warning("%s", warning)
        shadows = {s.name: s.shadow_of for s in settings.scorers if s.shadow_of}
        counters = Counters(settings.redis)
        stack.push_async_callback(counters.aclose)
        engine = RouteEngine(settings, embedder, executor, scorers, shadows, counters, detector)
        stack.push_async_callback(engine.aclose)
        if embedder.runs == "in_process":  # a remote embedder was probed above, or is probed by the first call
            await engine.pipeline.warm_up()
        yield engine


def _open_detector(settings: RouterSettings, backend: str, dim: int) -> TaskDetector | None:
    """The background-task detector, when on; a bundled one that does not fit a remote embedder's dimension is left
    off with a warning (the patterns still apply), a configured one that does not fit is refused."""
    routing = settings.routing
    if not routing.task_detector:
        return None
    detector = TaskDetector(routing.detector_path(backend))
    if detector.embedding_dim == dim:
        return detector
    message = (
        f"the background-task detector {detector.path} was trained on {detector.embedder} ({detector.embedding_dim} "
        f"dimensions); the {backend} embedder gives {dim}"
    )
    if routing.task_detector_path is not None:
        raise ConfigError(f"routing.task_detector_path: {message}. Train one on this embedder: router-service train-tasks")
    logger.warning("%s: it is off (routing.task_detector); train one for this embedder with router-service train-tasks",
                   message)
    return None


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
                f"scorer {scorer.name!r} ({scorer.path}, trained on {scorer.embedder}) expects {scorer.embedding_dim}. "
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
