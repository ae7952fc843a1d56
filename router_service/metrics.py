"""Prometheus metrics of the router: decisions, scores, stage latencies, errors.

Each router owns its registry (tests run several in one process). Labels stay
bounded: a chosen model outside the configured ones is counted as "other".
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["RouterMetrics"]

LATENCY_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class RouterMetrics:
    def __init__(self, known_models: set[str], scorers: set[str]) -> None:
        self.registry = CollectorRegistry()
        self._known = known_models
        self._scorers = scorers
        self.decisions = Counter(
            "router_route_decisions_total", "Route decisions by chosen model", ["model", "scorer"], registry=self.registry
        )
        self.rule_decisions = Counter(
            "router_rule_decisions_total", "Route decisions made by a rule (not scored), by model and rule",
            ["model", "rule"], registry=self.registry,
        )
        self.score = Histogram(
            "router_route_score", "Predicted strong win rate of routed prompts",
            buckets=tuple(i / 20 for i in range(1, 21)), registry=self.registry,
        )
        self.embed_seconds = Histogram(
            "router_embed_seconds", "Embedding time of the batch a request rode in (cache misses)",
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.score_seconds = Histogram(
            "router_score_seconds", "Scoring time of the batch a request rode in (cache misses)",
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.cache_hits = Counter("router_embedding_cache_hits_total", "Prompts answered from the cache", registry=self.registry)
        self.errors = Counter("router_errors_total", "Calls that ended with an error, by gRPC code", ["code"], registry=self.registry)
        self.realised_share = Gauge(
            "router_strong_share_realised", "Share of a strong-share policy's recent calls that went strong",
            ["scorer", "share"], registry=self.registry,
        )
        self.budget_left = Gauge("router_strong_budget_left", "Strong calls left in the budget now", registry=self.registry)
        self.budget_limited = Counter(
            "router_budget_limited_total", "Calls routed weak because the strong-call budget was spent",
            registry=self.registry,
        )
        self.budget_unenforced = Counter(
            "router_budget_unenforced_total", "Strong choices made without the budget checked: Redis was unavailable",
            registry=self.registry,
        )
        self.caller_refusals = Counter(
            "router_caller_refusals_total", "Calls refused by their caller's policy, by the limit that refused",
            ["caller", "limit"], registry=self.registry,
        )
        self.asked_share = Gauge(
            "router_strong_share_asked", "The strong share a policy asks for (beside router_strong_share_realised)",
            ["scorer", "share"], registry=self.registry,
        )
        self.live_threshold = Gauge(
            "router_threshold_live", "The threshold a strong-share policy uses now", ["scorer", "share"],
            registry=self.registry,
        )
        self.calibrated_threshold = Gauge(
            "router_threshold_calibrated", "The offline-calibrated threshold for the same share (NaN: uncalibrated)",
            ["scorer", "share"], registry=self.registry,
        )
        self.queued = Gauge(
            "router_queued_prompts", "Prompts waiting to be embedded, not yet in a batch", registry=self.registry
        )
        self.batch_size = Histogram(
            "router_batch_size", "Prompts embedded and scored together (cache misses of concurrent calls)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=self.registry,
        )
        self.shed_prompts = Counter(
            "router_shed_prompts_total", "Prompts refused or dropped under load (RESOURCE_EXHAUSTED), by reason: "
            "queue_full, deadline (the queue ahead would outlast it), late (dropped while queued)", ["reason"],
            registry=self.registry,
        )
        for reason in ("queue_full", "deadline", "late"):  # known label values start at 0: rate() works from the start
            self.shed_prompts.labels(reason=reason)

        self.scorer_info = Gauge(
            "router_scorer_info", "The scorers loaded now (value 1), by version and role (serving or shadow)",
            ["scorer", "version", "role"], registry=self.registry,
        )
        self.reloads = Counter(
            "router_scorer_reloads_total", "Scorer reloads by outcome: swapped, unchanged or rejected", ["outcome"],
            registry=self.registry,
        )
        for outcome in ("swapped", "unchanged", "rejected"):
            self.reloads.labels(outcome=outcome)
        self.shadow_routes = Counter(
            "router_shadow_routes_total", "Routes a shadow scorer also scored, by whether it would have chosen alike "
            "(undecided: it has no threshold for the share asked)", ["scorer", "shadow", "agree"], registry=self.registry,
        )
        self.shadow_agreement = Gauge(
            "router_shadow_agreement", "Share of routes on which the shadow scorer would have chosen alike",
            ["scorer", "shadow"], registry=self.registry,
        )
        self.shadow_correlation = Gauge(
            "router_shadow_score_correlation", "Pearson correlation of the serving and shadow strong win rates",
            ["scorer", "shadow"], registry=self.registry,
        )

    def track_scorers(self, names: set[str]) -> None:
        """After a reload: the scorer names that get their own label value."""
        self._scorers = self._scorers | names

    def serving(self, versions: list[tuple[str, str, str]]) -> None:
        self.scorer_info.clear()
        for name, version, role in versions:
            self.scorer_info.labels(scorer=name, version=version, role=role).set(1)

    def shadow(
        self, scorer: str, shadow: str, shadow_strong: bool | None, serving_strong: bool, agreement: float,
        correlation: float,
    ) -> None:
        agree = "undecided" if shadow_strong is None else str(shadow_strong == serving_strong).lower()
        self.shadow_routes.labels(scorer=scorer, shadow=shadow, agree=agree).inc()
        self.shadow_agreement.labels(scorer=scorer, shadow=shadow).set(agreement)
        self.shadow_correlation.labels(scorer=scorer, shadow=shadow).set(correlation)

    def budget(self, left: float | None, limited: bool, enforced: bool) -> None:
        """A strong choice met the budget: ``left`` in the router's own (None: not checked there)."""
        if left is not None and enforced:
            self.budget_left.set(left)
        if limited:
            self.budget_limited.inc()
        if not enforced:
            self.budget_unenforced.inc()

    def share(self, scorer: str, share: float, realised: float, threshold: float, calibrated: float) -> None:
        """A share policy's realised share and current threshold; shares are whole percents (bounded labels)."""
        labels = {"scorer": scorer if scorer in self._scorers else "other", "share": f"{round(share * 100)}"}
        self.asked_share.labels(**labels).set(share)
        self.realised_share.labels(**labels).set(realised)
        self.live_threshold.labels(**labels).set(threshold)
        self.calibrated_threshold.labels(**labels).set(calibrated)

    def batch(self, size: int) -> None:
        self.batch_size.observe(size)

    def shed(self, reason: str, count: int) -> None:
        self.shed_prompts.labels(reason=reason).inc(count)

    def ruled(self, model: str, rule: str) -> None:
        """A decision by a rule (rules come from the config: a bounded label)."""
        self.rule_decisions.labels(model=model if model in self._known else "other", rule=rule).inc()

    def decided(self, model: str, scorer: str, score: float, cached: bool, embed_ms: float, score_ms: float) -> None:
        self.decisions.labels(
            model=model if model in self._known else "other", scorer=scorer if scorer in self._scorers else "other"
        ).inc()
        self.score.observe(score)
        if cached:
            self.cache_hits.inc()
        else:
            self.embed_seconds.observe(embed_ms / 1e3)
            self.score_seconds.observe(score_ms / 1e3)
