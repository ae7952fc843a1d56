"""Prometheus metrics of the gateway, served at GET /metrics.

Labels stay bounded: models and upstreams come from the config, error kinds
from the gateway's own error classes. Under ``serve --workers N`` every worker writes
its figures to PROMETHEUS_MULTIPROC_DIR (prometheus_client's multiprocess mode, set up
by the parent), and whichever worker answers /metrics reports the sum of all of them.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

__all__ = ["GatewayMetrics"]

SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("gateway_requests_total", "Chat requests by API and outcome", ["api", "outcome"], registry=r)
        self.decisions = Counter(
            "gateway_route_decisions_total", "Which model answered, and how it was chosen",
            ["model", "routed", "degraded", "fallback"], registry=r,
        )
        self.router_overhead = Histogram(
            "gateway_router_overhead_seconds", "The Route call as the gateway sees it", buckets=SECONDS, registry=r
        )
        self.ttft = Histogram(
            "gateway_time_to_first_token_seconds", "From the upstream request to its first event", ["upstream"],
            buckets=SECONDS, registry=r,
        )
        self.tokens_per_second = Histogram(
            "gateway_tokens_per_second", "Completion tokens per second after the first", ["upstream"],
            buckets=(1, 5, 10, 20, 50, 100, 200, 500, 1000, 5000), registry=r,
        )
        self.upstream_errors = Counter(
            "gateway_upstream_errors_total", "Upstream failures by kind", ["upstream", "kind"], registry=r
        )
        self.fail_open = Counter("gateway_fail_open_total", "Requests answered by the default model: router down or slow", registry=r)
        self.inflight = Gauge(
            "gateway_inflight_streams", "Completions being streamed now", registry=r, multiprocess_mode="livesum"
        )
        # Per host of a many-host upstream (hosts come from the config: bounded).
        self.host_requests = Counter(
            "gateway_upstream_host_requests_total", "Requests to each host by outcome (ok, or the failure kind)",
            ["upstream", "host", "outcome"], registry=r,
        )
        self.host_inflight = Gauge(
            "gateway_upstream_host_inflight", "Requests in flight to each host", ["upstream", "host"], registry=r,
            multiprocess_mode="livesum",
        )
        self.host_up = Gauge(  # each worker ejects on its own: 0 when any worker has the host ejected
            "gateway_upstream_host_up", "1 while a host takes requests, 0 while ejected", ["upstream", "host"],
            registry=r, multiprocess_mode="livemin",
        )
        self.host_ejections = Counter(
            "gateway_upstream_host_ejections_total", "Times each host was ejected after failures", ["upstream", "host"], registry=r
        )
        self.retries = Counter(
            "gateway_upstream_retries_total", "Requests retried on another host before the first token", ["upstream"], registry=r
        )

        # Callers come from the config (bounded); "anonymous" and "default" stand for keyless and unnamed keys.
        self.caller_refusals = Counter(
            "gateway_caller_refusals_total", "Requests refused by their caller's policy, by the limit that refused",
            ["caller", "limit"], registry=r,
        )
        self.caller_tokens = Counter(
            "gateway_tokens_total", "Tokens of finished completions (source: the upstream's usage, or estimated)",
            ["caller", "model", "kind", "source"], registry=r,
        )
        self.spend = Counter(
            "gateway_spend_usd_total", "What completions cost, from [[prices]]", ["caller", "model"], registry=r
        )
        self.routed_spend = Counter(
            "gateway_routed_spend_usd_total", "What routed completions cost", ["caller"], registry=r
        )
        self.spend_baseline = Counter(
            "gateway_spend_baseline_usd_total", "What the routed completions would have cost on the priciest routable model",
            ["caller"], registry=r,
        )
        self.routed = Counter(
            "gateway_routed_total", "Routed completions by caller, its policy, and the tier the router chose "
            "(strong, weak): the share each caller and policy realises", ["caller", "policy", "tier"], registry=r,
        )
        self.asked_share = Gauge(
            "gateway_policy_strong_share_asked", "The strong share each caller policy asks for ([[caller_policies]])",
            ["policy"], registry=r, multiprocess_mode="max",
        )
        self.strong_calls_left = Gauge(
            "gateway_caller_strong_calls_left", "Strong calls left in each caller's budget, at its latest request",
            ["caller"], registry=r, multiprocess_mode="mostrecent",
        )
        self.budget_limited = Counter(
            "gateway_budget_limited_total", "Routed requests sent weak because their caller's strong budget was spent",
            ["caller"], registry=r,
        )
        self.budget_unenforced = Counter(
            "gateway_budget_unenforced_total", "Requests served without their limits checked: Redis was unavailable",
            registry=r,
        )
        self.redis_up = Gauge(
            "gateway_redis_up", "1 while the shared counters (Redis) answer; 0 while they do not (no Redis: 1)",
            registry=r, multiprocess_mode="livemin",
        )
        self.redis_up.set(1)
        self.rerouted = Counter(
            "gateway_rerouted_total", "Routed requests moved to another model: it lacked a capability, or the context "
            "window", ["reason"], registry=r,
        )
        self.loop_lag = Histogram(
            "gateway_event_loop_lag_seconds", "How late the event loop woke a 50 ms timer: a blocked loop delays every "
            "request at once", buckets=(0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0), registry=r,
        )

    def exposition(self) -> bytes:
        """The text /metrics answers: this process's figures, or every worker's under ``--workers``."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)
