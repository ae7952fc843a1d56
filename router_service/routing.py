"""The routing policy: what to embed, which threshold, which candidates, and the choice.

Which turns are embedded: only the last user message. RouteLLM does the same;
the scorers are trained on single prompts, and a long system prompt or earlier
turns would otherwise dominate the embedding and blur the question at hand.

With candidates (more than two models), each mapped to a scorer model and
given a relative cost, the router picks the cheapest candidate whose
predicted loss to the strongest is acceptable: the strongest candidate is the
most expensive one, and a cheaper candidate c is chosen when
P(strongest beats c) < threshold. With just the strong/weak pair this is
RouteLLM's rule: strong when P(strong beats weak) >= threshold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .adapters.scorer import OnnxScorer
from .adapters.task_detector import TaskView, task_view
from .config import LimitSettings, RoutingSettings
from .domain import CandidateRequest, RouteQuery
from .errors import ConfigError, InvalidRequest, Uncalibrated, UnknownScorer
from .mf import sigmoid
from .rules import Rule, Rules
from .share import CallerWindows, share_key

__all__ = ["Choice", "Plan", "RoutingPolicy"]

ROLES = frozenset({"system", "user", "assistant", "tool", "developer"})


@dataclass(frozen=True)
class Candidate:
    model: str
    scorer_model: str
    index: int  # column in the scorer's model_scores
    cost: float


@dataclass(frozen=True)
class Plan:
    """A validated request: what to embed and how to decide."""

    text: str
    scorer: OnnxScorer
    threshold: float
    candidates: tuple[Candidate, ...]  # cheapest first; the last is the strongest
    explicit_candidates: bool
    share: float | None = None  # the strong share asked for, when the threshold comes from one
    observed: bool = True  # enters the live-share window: not when the caller named its own threshold
    rule: Rule | None = None  # a rule decides: the text is not scored
    caller: str = ""  # whose live-share window
    strong_spent: bool = False  # the asking service's strong budget for this caller is spent
    preview: bool = False  # decide only: recorded nowhere (RouteRequest.preview)
    view: TaskView | None = None  # what the background-task detector reads (scored plans only)


@dataclass(frozen=True)
class Choice:
    model: str
    score: float
    threshold: float
    routed_strong: bool
    strongest_win_rates: tuple[float, ...]  # per candidate, same order as the plan
    budget_limited: bool = False  # the strong model was chosen, but the strong-call budget was spent


class RoutingPolicy:
    """Thresholds and choices over one set of scorers; a reload builds a new policy.

    ``shadows``: shadow scorer name -> the serving scorer it shadows (never the default).
    ``carry``: the policy being replaced: each scorer's live-share windows are kept where the scorer
    itself is unchanged. The strong-call budget is the engine's (it spans reloads)."""

    def __init__(
        self,
        routing: RoutingSettings,
        limits: LimitSettings,
        scorers: Mapping[str, OnnxScorer],
        *,
        shadows: Mapping[str, str] | None = None,
        carry: RoutingPolicy | None = None,
    ) -> None:
        self._routing = routing
        self._limits = limits
        self.rules = Rules(routing)
        self.scorers = dict(scorers)
        self.shadow_of = dict(shadows or {})
        self.default_scorer = next(name for name in self.scorers if name not in self.shadow_of)
        # The caller's model names -> (scorer model or role, cost).
        self.models: dict[str, tuple[str, float]] = {
            routing.weak_model: ("weak", routing.weak_cost),
            routing.strong_model: ("strong", routing.strong_cost),
        }
        for i, model in enumerate(routing.models):
            self.models[model.name] = (model.scorer_model, model.cost)
            for scorer in self.scorers.values():
                if model.scorer_model not in ("strong", "weak") and model.scorer_model not in scorer.models:
                    raise ConfigError(
                        f"routing.models[{i}].scorer_model: {model.scorer_model!r} is not a model of scorer "
                        f"{scorer.name!r}; use 'strong', 'weak' or one of {list(scorer.models)}"
                    )
        if routing.strong_model == routing.weak_model:
            raise ConfigError("routing.strong_model and routing.weak_model must differ")
        # Recent traffic per scorer and caller, for share requests (share.py); empty when live_share is off.
        self.live: dict[str, CallerWindows] = {}
        if routing.live_share:
            kept = carry.live if carry is not None else {}
            for name, scorer in self.scorers.items():
                same = carry is not None and carry.scorers.get(name) is scorer and name in kept
                self.live[name] = kept[name] if same else CallerWindows(routing.live_window, routing.live_warmup)

    @property
    def strong_model(self) -> str:
        return self._routing.strong_model

    @property
    def weak_model(self) -> str:
        return self._routing.weak_model

    def plan(self, query: RouteQuery) -> Plan:
        scorer = self._scorer(query.scorer)
        text = self._text(query)
        threshold, share = self._threshold(query, scorer, query.caller)
        if query.candidates:
            candidates = self._candidates(query.candidates, scorer)
        else:
            candidates = (
                self._candidate(self._routing.weak_model, "weak", self._routing.weak_cost, scorer),
                self._candidate(self._routing.strong_model, "strong", self._routing.strong_cost, scorer),
            )
        rule = self.rules.match(text)
        view = None
        if rule is None and self._routing.task_detector:  # what the background-task detector reads
            system = "\n".join(m.content for m in query.messages or () if m.role in ("system", "developer"))
            view = task_view(text, system, query.tools, query.max_tokens)
        return Plan(
            text, scorer, threshold, candidates, bool(query.candidates), share,
            observed=query.threshold is None and not query.preview,
            rule=rule, caller=query.caller, strong_spent=query.strong_spent, preview=query.preview, view=view,
        )

    def by_rule(self, plan: Plan, rule: Rule) -> Choice:
        """A rule's choice: the cheapest candidate, or the strongest (the engine then checks the budget)."""
        cheapest, strongest = plan.candidates[0], plan.candidates[-1]
        rates = tuple(0.0 for _ in plan.candidates)
        if rule.tier == "weak":
            return Choice(cheapest.model, 0.0, plan.threshold, False, rates)
        return Choice(strongest.model, 0.0, plan.threshold, True, rates)

    def choose(self, plan: Plan, model_scores: np.ndarray) -> Choice:
        """Pick the cheapest candidate the strongest is not predicted to beat."""
        strongest = plan.candidates[-1]
        rates = tuple(
            float(sigmoid(model_scores[strongest.index] - model_scores[c.index])) for c in plan.candidates[:-1]
        )
        for candidate, rate in zip(plan.candidates, rates, strict=False):
            if rate < plan.threshold:
                return Choice(candidate.model, rate, plan.threshold, False, (*rates, 0.5))
        # The strongest wins: report its closest contender's win rate.
        return Choice(strongest.model, min(rates), plan.threshold, True, (*rates, 0.5))

    # -- validation -----------------------------------------------------------------

    def _scorer(self, name: str) -> OnnxScorer:
        try:
            return self.scorers[name or self.default_scorer]
        except KeyError:
            raise UnknownScorer(f"scorer {name!r} is not configured; available: {sorted(self.scorers)}") from None

    def _text(self, query: RouteQuery) -> str:
        if query.prompt is not None:
            text = query.prompt
            where = "prompt"
        elif query.messages is not None:
            messages = query.messages
            if len(messages) > self._limits.max_messages:
                raise InvalidRequest(
                    f"chat has {len(messages)} messages, more than limits.max_messages={self._limits.max_messages}"
                )
            for i, message in enumerate(messages):
                if message.role not in ROLES:
                    raise InvalidRequest(f"chat.messages[{i}].role {message.role!r} is not one of {sorted(ROLES)}")
            users = [i for i, m in enumerate(messages) if m.role == "user"]
            if not users:
                raise InvalidRequest("chat has no user message: the last user message is what gets routed")
            text = messages[users[-1]].content
            where = f"chat.messages[{users[-1]}].content"
        else:
            raise InvalidRequest("no input: set prompt, or chat.messages with at least one user message")
        if not text.strip():
            raise InvalidRequest(f"{where} is empty")
        if len(text) > self._limits.max_prompt_chars:
            raise InvalidRequest(
                f"{where} has {len(text)} characters, more than limits.max_prompt_chars={self._limits.max_prompt_chars}"
            )
        return text

    def _threshold(self, query: RouteQuery, scorer: OnnxScorer, caller: str) -> tuple[float, float | None]:
        """The threshold, and the strong share it stands for (None for an explicit threshold)."""
        if query.threshold is not None:
            value = query.threshold
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise InvalidRequest(f"threshold must be within [0, 1], got {value}")
            return value, None
        if query.strong_share is not None:
            share = query.strong_share
            if not (math.isfinite(share) and 0.0 <= share <= 1.0):
                raise InvalidRequest(f"strong_share must be within [0, 1], got {share}")
            return self.threshold_for(scorer, share, caller), share
        if self._routing.threshold is not None:
            return self._routing.threshold, None
        return self.threshold_for(scorer, self._routing.strong_share, caller), self._routing.strong_share

    def threshold_for(self, scorer: OnnxScorer, share: float, caller: str = "") -> float:
        """The live threshold for ``share`` on the caller's recent traffic, or the calibrated one until there
        is enough."""
        windows = self.live.get(scorer.name)
        live = windows.peek(caller) if windows is not None else None
        threshold = live.threshold(share) if live is not None else None
        return scorer.threshold_for_share(share) if threshold is None else threshold

    def default_threshold(self, scorer: OnnxScorer | None = None) -> float:
        """The configured threshold, or the one that gives the configured strong share."""
        if self._routing.threshold is not None:
            return self._routing.threshold
        return self.threshold_for(scorer or self.scorers[self.default_scorer], self._routing.strong_share)

    def observe(self, plan: Plan, model_scores: np.ndarray, routed_strong: bool) -> float | None:
        """Record a routed prompt's strong-vs-weak score; for a share policy, its realised share of recent calls."""
        windows = self.live.get(plan.scorer.name)
        if windows is None:
            return None
        live = windows.of(plan.caller)
        live.observe(plan.scorer.win_rate(model_scores))
        return None if plan.share is None else live.routed(share_key(plan.share), routed_strong)

    def shadow_choice(self, plan: Plan, shadow: OnnxScorer, win_rate: float) -> bool | None:
        """Would ``shadow`` have routed strong? Its own threshold for the plan's share (its live one
        once warmed up), or the plan's explicit threshold; None when it cannot honour the share."""
        windows = self.live.get(shadow.name)
        if windows is not None and plan.observed:
            windows.of(plan.caller).observe(win_rate)
        if plan.share is None:
            return win_rate >= plan.threshold
        try:
            return win_rate >= self.threshold_for(shadow, plan.share, plan.caller)
        except Uncalibrated:
            return None

    def _candidates(self, given: tuple[CandidateRequest, ...], scorer: OnnxScorer) -> tuple[Candidate, ...]:
        resolved: list[Candidate] = []
        seen: set[str] = set()
        for i, item in enumerate(given):
            if not item.model:
                raise InvalidRequest(f"candidates[{i}].model is empty")
            if item.model in seen:
                raise InvalidRequest(f"candidates[{i}].model {item.model!r} is listed twice")
            seen.add(item.model)
            configured = self.models.get(item.model)
            scorer_model = item.scorer_model or (configured[0] if configured else "")
            if not scorer_model:
                raise InvalidRequest(
                    f"candidates[{i}]: model {item.model!r} is not configured in routing.models; "
                    f"give its scorer_model (one of {list(scorer.models)}, 'strong' or 'weak')"
                )
            cost = item.cost if item.cost is not None else (configured[1] if configured else math.nan)
            candidate = self._candidate(item.model, scorer_model, cost, scorer, f"candidates[{i}]")
            if not (math.isfinite(cost) and cost >= 0):
                raise InvalidRequest(
                    f"candidates[{i}].cost must be a finite number >= 0 (model {item.model!r}); "
                    "set it, or configure the model's cost in routing.models"
                )
            resolved.append(candidate)
        if len(resolved) < 2:
            raise InvalidRequest("candidates: give at least two, or none for the configured strong/weak pair")
        # Stable: equal costs keep the caller's order.
        return tuple(sorted(resolved, key=lambda c: c.cost))

    @staticmethod
    def _candidate(model: str, scorer_model: str, cost: float, scorer: OnnxScorer, where: str = "") -> Candidate:
        if scorer_model == "strong":
            return Candidate(model, scorer.strong_model, scorer.strong_index, cost)
        if scorer_model == "weak":
            return Candidate(model, scorer.weak_model, scorer.weak_index, cost)
        if scorer_model not in scorer.models:
            raise InvalidRequest(
                f"{where}.scorer_model {scorer_model!r} is not a model of scorer {scorer.name!r}; "
                f"use 'strong', 'weak' or one of {list(scorer.models)}"
            )
        return Candidate(model, scorer_model, scorer.models.index(scorer_model), cost)
