"""Dispatch: which model answers (router, fail-open or concrete), which upstream serves it, and fallback.

The upstream stream is opened up to its first event before anything is sent to
the client, so a failure before the first token can still switch to the
fallback model, and the response headers can say which model answered.
"""

from __future__ import annotations

import fnmatch
import logging
import time
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field, replace

from service_core.quota import RedisCounters

from ..config import GatewaySettings
from ..domain import ChatParams, Delta, Finish, HostState, ModelSpec, RouteDecision, RouterView
from ..errors import GatewayError, InvalidRequest, OverLimit, UpstreamStreamError
from ..metrics import GatewayMetrics
from ..routing.fit import estimate_request_tokens
from ..routing.router_client import RouterClient
from ..routing.rules import GatewayRules
from ..routing.turns import TurnMemory, session_key, turn_key
from ..routing.words import users_words
from ..upstreams import Upstream
from .stream import Opened

__all__ = ["Ask", "Dispatcher", "FirstEvent"]

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class Ask:
    """Who asks, for routing: the request id, its headers (gateway rules), the caller's window name (empty: the
    router's default window) and whether the caller's strong budget is spent."""

    request_id: str
    headers: Mapping[str, str] = field(default_factory=dict)
    caller: str = ""
    strong_spent: bool = False
    preview: bool = False  # POST /v1/route: the router records nothing, the turn is not remembered
    models: tuple[str, ...] | None = None  # the concrete models the caller's policy lets it name (None: any)

    def may_name(self, model: str) -> bool:
        return self.models is None or any(fnmatch.fnmatchcase(model, pattern) for pattern in self.models)


FirstEvent = tuple[Opened, Delta | Finish, AsyncGenerator[Delta | Finish, None]]


class Dispatcher:
    def __init__(
        self, settings: GatewaySettings, router: RouterClient, upstreams: dict[str, Upstream], metrics: GatewayMetrics,
        shared: RedisCounters | None = None,
    ) -> None:
        self._settings = settings
        self._router = router
        self.by_model = {model: upstreams[u.name] for u in settings.upstreams for model in u.models}
        self._metrics = metrics
        self._capabilities = settings.model_capabilities()
        # The windows configured: sent to the upstream (Ollama: options.num_ctx). Others are what the upstream reports.
        self.windows = {model: m.context_window for model, m in settings.models.items() if m.context_window}
        self._turns = TurnMemory(settings.turns, shared, settings.redis.timeout_ms / 1e3)
        self._rules = GatewayRules(settings.rules)

    async def router_known(self) -> None:
        """The router's strong and weak models, asked again while unknown (what budgets count depends on them)."""
        await self._router.ensure_described()

    async def router_view(self) -> RouterView:
        return await self._router.describe()

    def host_states(self) -> list[HostState]:
        """Every upstream host, in config order."""
        upstreams = {id(u): u for u in self.by_model.values()}
        return [state for upstream in upstreams.values() for state in upstream.hosts()]

    def window_of(self, model: str) -> int | None:
        """The window ``model`` is served with: configured, else what its upstream reports (Ollama), else unknown."""
        configured = self.windows.get(model)
        if configured is not None:
            return configured
        upstream = self.by_model.get(model)
        return upstream.windows().get(model) if upstream is not None else None

    def known_windows(self) -> dict[str, int]:
        return {m: w for m in self.by_model if (w := self.window_of(m)) is not None}

    def lacks(self, model: str, needs: frozenset[str]) -> frozenset[str]:
        """The capabilities of ``needs`` that ``model`` lacks (a model not in [capabilities] lacks none)."""
        can = self._capabilities.get(model)
        return frozenset() if can is None else needs - can

    @property
    def strong_model(self) -> str:
        """The router's strong model (as Describe said), else the fail-open model: what a strong budget counts."""
        return self._router.strong_model or self._settings.default_model

    @property
    def weak_model(self) -> str:
        """The router's weak model (as Describe said), else the fallback model: what a spent caller gets."""
        return self._router.weak_model or self._settings.fallback_model or self._settings.default_model

    def _within_budget(self, route: RouteDecision, ask: Ask, params: ChatParams | None = None) -> RouteDecision:
        """The one rule of accounting, applied to every decision: the model that answers says whether the call is
        strong; a caller whose strong budget is spent never reaches the strong model, however it was decided (a
        rule, a turn, failing open, a capability), but the weak one, flagged."""
        if route.model != self.strong_model:
            return replace(route, strong=False)
        if not ask.strong_spent:
            return replace(route, strong=True)
        weak = self.weak_model
        if weak == route.model or weak not in self.by_model:
            raise OverLimit(
                f"the caller's strong budget is spent and no weak model ({weak!r}) can answer instead; retry later"
            )
        window = self.window_of(weak)
        tokens = estimate_request_tokens(params) if params is not None and window is not None else 0
        if window is not None and tokens > window:  # never cut silently to the weak model's window
            raise OverLimit(
                f"the caller's strong budget is spent, and this request (about {tokens} tokens) "
                f"does not fit the weak model {weak!r}'s context window of {window}; retry when the budget frees"
            )
        return replace(route, model=weak, strong=False, budget_limited=True,
                       reason=f"{route.reason}; the caller's strong budget is spent, so {weak} answers")

    async def decide(self, spec: ModelSpec, params: ChatParams, ask: Ask) -> RouteDecision:
        """Which model would answer, and why (rules, turn, router, capabilities), without asking any LLM."""
        needs = params.needs()
        return self._within_budget(self._fitting(self._capable(await self._route(spec, params, ask), needs), params, needs), ask, params)

    async def open(self, spec: ModelSpec, params: ChatParams, ask: Ask) -> FirstEvent:
        """Route, then open the chosen model's stream up to its first event (or the fallback's)."""
        started = time.perf_counter()
        needs = params.needs()
        request_id = ask.request_id
        route = self._within_budget(self._fitting(self._capable(await self._route(spec, params, ask), needs), params, needs), ask, params)
        if route.rerouted_for:
            for reason in route.rerouted_for.split(","):
                self._metrics.rerouted.labels(reason=reason).inc()
        route_ms = (time.perf_counter() - started) * 1e3
        if not spec.concrete:
            self._metrics.router_overhead.observe(route_ms / 1e3)
        if route.degraded:
            self._metrics.fail_open.inc()
        try:
            upstream, ttft_ms, first, rest = await self._first_event(route.model, params)
        except GatewayError as exc:
            exc.route = route  # the error answer still says how the model was chosen (x-route-* headers)
            fallback = self._settings.fallback_model
            if isinstance(exc, InvalidRequest) or not fallback or fallback == route.model or self.lacks(fallback, needs):
                raise
            if fallback == self.strong_model and ask.strong_spent:  # the budget holds on the fallback path too
                raise
            logger.warning("request %s: %s; falling back to %s", request_id, exc, fallback)
            first_model = route.model
            route = replace(route, model=fallback, fallback=True, strong=fallback == self.strong_model,
                            reason=f"{route.reason}; fallback after: {exc}")
            try:
                upstream, ttft_ms, first, rest = await self._first_event(route.model, params)
            except GatewayError as second:
                # Both attempts, in the client's message and the log: what was asked first, then the fallback.
                same = str(second) == str(exc).replace(repr(first_model), repr(fallback))
                again = "the same way" if same else f"too: {second}"
                second.args = (f"model {first_model!r} failed: {exc}. Its fallback {fallback!r} failed {again}",)
                second.route = route
                logger.warning("request %s: the fallback failed too: %s", request_id, second)
                raise
        self._metrics.decisions.labels(
            model=route.model, routed=str(route.routed).lower(), degraded=str(route.degraded).lower(),
            fallback=str(route.fallback).lower(),
        ).inc()
        adapted = (*params.ignored, *self.by_model[route.model].adaptations(params))
        return Opened(request_id, spec.name, upstream, route, route_ms, ttft_ms, adapted), first, rest

    def routable(self) -> list[str]:
        """The served models a routed request may go to: the fail-open and fallback models first (usually
        the strong and weak pair), then the others the router may choose; never a served model outside
        routing (an expensive one that happens to be listed)."""
        settings = self._settings
        candidates = [settings.default_model, settings.fallback_model, *sorted(self._router.routed)]
        return [m for m in dict.fromkeys(candidates) if m is not None and m in self.by_model]

    def _capable(self, route: RouteDecision, needs: frozenset[str]) -> RouteDecision:
        """The route, or, when its model lacks a capability the request needs, a routed request moved to a
        model that has them; a concrete request (or no capable model) is refused, naming model and capability."""
        missing = self.lacks(route.model, needs)
        if not missing:
            return route
        able = [m for m in self.routable() if not self.lacks(m, needs)]
        wanted = ", ".join(sorted(missing))
        if route.routed or route.degraded:
            if able:
                return replace(
                    route, model=able[0], rerouted_for=",".join(sorted(missing)),
                    reason=f"{route.reason}; {route.model} lacks {wanted}, so {able[0]} answers",
                )
        hint = f"models that can: {', '.join(able)}" if able else "no served model can; see [capabilities]"
        raise InvalidRequest(
            f"model {route.model!r} cannot take this request: it lacks {wanted} (the gateway's [capabilities]); {hint}"
        )

    def _fitting(self, route: RouteDecision, params: ChatParams, needs: frozenset[str]) -> RouteDecision:
        """The route, or, when the request does not fit its model's context window, a routed request moved to a
        routable model that holds it (and has what it needs); a concrete request, or one no model holds, is refused
        naming the estimate and each window. Never a silent truncation."""
        window = self.window_of(route.model)
        if window is None:
            return route
        tokens = estimate_request_tokens(params)
        if tokens <= window:
            return route
        holding = [m for m in self.routable() if not self.lacks(m, needs) and tokens <= (self.window_of(m) or 0)]
        if (route.routed or route.degraded) and holding:
            moved = holding[0]
            why = ",".join(filter(None, (route.rerouted_for, "context")))
            return replace(route, model=moved, rerouted_for=why,
                           reason=f"{route.reason}; about {tokens} tokens do not fit {route.model}'s window of {window}, "
                           f"so {moved} answers")
        windows = ", ".join(f"{m} {w}" for m, w in self.known_windows().items())
        raise InvalidRequest(
            f"the request needs about {tokens} tokens (its messages, tools and the output it asks for, estimated), more "
            f"than model {route.model!r}'s context window of {window}; the windows: {windows} ([models.\"<name>\"] "
            "context_window). Shorten the conversation, or ask for a model that holds it"
        )

    async def _route(self, spec: ModelSpec, params: ChatParams, ask: Ask) -> RouteDecision:
        if spec.concrete:
            return RouteDecision(spec.name, reason="a concrete model was requested: no routing")
        rule = self._rules.match(params, ask.headers)
        if rule is not None and ask.may_name(rule.model):  # a rule picks no model the caller's policy keeps from it
            return RouteDecision(rule.model, routed=True, rule=rule.name, reason=f"gateway rule {rule.name!r}: not routed")
        turn = turn_key(params.messages, ask.caller)
        if turn is not None and turn[1]:
            model = await self._turns.model_of(ask.caller, turn[0])
            if model is not None and model in self.by_model:
                last = params.messages[-1].role
                return RouteDecision(
                    model, routed=True, rule="turn",
                    reason=f"continues a turn {model} started (its last message is a {last} message): not routed again",
                )
        decision = await self._route_anew(spec, params, ask)
        if self._settings.turns.session == "sticky" and decision.routed and not decision.rule:
            decision = await self._sticky(decision, params, ask)
        if turn is not None and decision.routed and not ask.preview:
            await self._turns.remember(ask.caller, turn[0], decision.model)
        return decision

    async def _sticky(self, decision: RouteDecision, params: ChatParams, ask: Ask) -> RouteDecision:
        """A session's new user turn stays on the model its session is on unless the router's score is past the
        threshold by turns.session_margin: switching makes the other model re-read the whole prompt (its prefix
        cache holds another conversation). A client's background task (a rule decided it) neither asks nor moves."""
        key = session_key(params, ask.headers)
        if key is None:
            return decision
        kept = await self._turns.model_of(ask.caller, key)
        margin = self._settings.turns.session_margin
        if (kept is not None and kept != decision.model and kept in self.routable()
                and abs(decision.score - decision.threshold) < margin):
            decision = replace(
                decision, model=kept, rule="session",
                reason=f"{decision.reason}; within turns.session_margin={margin} of it, the session stays on {kept}",
            )
        if not ask.preview:
            await self._turns.remember(ask.caller, key, decision.model)
        return decision

    async def _route_anew(self, spec: ModelSpec, params: ChatParams, ask: Ask) -> RouteDecision:
        text = users_words(params)
        if text is None:
            raise InvalidRequest("the conversation has no user message: a routed request is routed on the last one")
        decision = await self._router.route(
            text,
            threshold=spec.threshold,
            strong_share=spec.strong_share,
            default_model=self._settings.default_model,
            request_id=ask.request_id,
            caller=ask.caller,
            strong_spent=ask.strong_spent,
            scorer=spec.scorer,
            preview=ask.preview,
        )
        if decision.model not in self.by_model:
            raise GatewayError(
                f"the router chose {decision.model!r}, which no upstream serves: make routing.strong_model/weak_model "
                "in the router's config match models listed in the gateway's upstreams"
            )
        return decision

    async def _first_event(
        self, model: str, params: ChatParams
    ) -> tuple[str, float, Delta | Finish, AsyncGenerator[Delta | Finish, None]]:
        upstream = self.by_model[model]
        started = time.perf_counter()
        if model in self.windows:  # what the upstream serves it with (Ollama: options.num_ctx)
            params = replace(params, context_window=self.windows[model])
        events = upstream.stream(model, params)
        try:
            try:
                first = await events.__anext__()
            except StopAsyncIteration:
                raise UpstreamStreamError(f"model {model!r}: the upstream stream was empty") from None
        except BaseException as exc:
            if isinstance(exc, GatewayError):
                self._metrics.upstream_errors.labels(upstream=upstream.name, kind=type(exc).__name__).inc()
            await events.aclose()
            raise
        ttft = time.perf_counter() - started
        self._metrics.ttft.labels(upstream=upstream.name).observe(ttft)
        return upstream.name, ttft * 1e3, first, events
