"""The ``x-route-*`` headers every client API's answer carries: which model answered and how it was chosen."""

from __future__ import annotations

from ..domain import RouteDecision

__all__ = ["route_headers"]


def route_headers(route: RouteDecision) -> dict[str, str]:
    return {
        "x-route-model": route.model,
        "x-route-routed": str(route.routed).lower(),
        "x-route-score": f"{route.score:.6f}",
        "x-route-threshold": f"{route.threshold:.6f}",
        "x-route-degraded": str(route.degraded).lower(),
        "x-route-fallback": str(route.fallback).lower(),
        "x-route-budget-limited": str(route.budget_limited).lower(),
        **({"x-route-rerouted-for": route.rerouted_for} if route.rerouted_for else {}),
        **({"x-route-rule": route.rule} if route.rule else {}),
        **({"x-route-budget-unenforced": "true"} if route.budget_unenforced else {}),
    }
