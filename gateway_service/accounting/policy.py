"""Each caller's policy, applied to each request: what it may name, how it is routed, what it may spend.

Checked before routing (the front door has already named the caller): the model it asks for (403
when its policy does not allow it), its requests and tokens per minute (429 naming the limit and
when it frees), and its strong budget. A routed request reserves one strong call before the router
is asked (so concurrent requests can never pass the budget together) and gives it back when the
router chooses weak; past the budget the router is told, and routes weak, flagged, as before.
Counters are ``service_core.quota``: per process, or fleet-wide on Redis.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, replace

from service_core.callers import ANONYMOUS, CallerLimits, Identity
from service_core.quota import Check, Counters, StoreUnavailable, Taken

from ..config import CallerPolicySettings, GatewaySettings
from ..domain import ModelSpec
from ..errors import OverLimit, PolicyDenied
from ..errors import StoreUnavailable as StoreGone
from ..metrics import GatewayMetrics

__all__ = ["NANO", "Allowance", "Caller", "CallerPolicies"]

NANO = 1_000_000_000  # spend is counted in nano-dollars: integers on Redis, exact sums to $0.001 per million tokens


@dataclass(frozen=True)
class Caller:
    name: str
    policy: CallerPolicySettings | None
    admin: bool = False


ANYONE = Caller(ANONYMOUS, None, admin=True)


@dataclass
class Allowance:
    """What the checks found for one request: whether its strong budget is spent, a reserved strong call."""

    caller: Caller
    strong_spent: bool = False
    reserved: Taken | None = None
    cost: Taken | None = None  # the dollars reserved for a strong answer (nano-dollars, ``cost_reserved`` of them)
    cost_reserved: int = 0
    unenforced: bool = False  # the shared counters were unavailable: limits were not enforced for it


class CallerPolicies:
    def __init__(self, settings: GatewaySettings, counters: Counters, metrics: GatewayMetrics) -> None:
        self._policies = {p.name: p for p in settings.caller_policies}
        self._default = self._policies.get("default")
        self.limits = CallerLimits(counters, "gw")
        self._metrics = metrics
        for policy in settings.caller_policies:
            if policy.strong_share is not None:
                metrics.asked_share.labels(policy=policy.name).set(policy.strong_share)

    def caller(self, identity: Identity) -> Caller:
        policy = self._policies[identity.policy] if identity.policy else self._default
        return Caller(identity.name, policy, identity.admin)

    def spec(self, caller: Caller, spec: ModelSpec) -> ModelSpec:
        """The request's model as the caller's policy allows it: 403 outside it; ``router`` takes its share."""
        policy = caller.policy
        if policy is None:
            return spec
        if spec.concrete:
            if not any(fnmatch.fnmatchcase(spec.name, pattern) for pattern in policy.models):
                allowed = ", ".join(policy.models) or "none"
                raise self._denied(caller, f"may not name model {spec.name!r} (its policy {policy.name!r} allows: "
                                   f"{allowed}); ask for 'router'")
            return spec
        if spec.name == "router":
            if policy.threshold is not None or policy.strong_share is not None:
                return replace(spec, threshold=policy.threshold, strong_share=policy.strong_share)
            return spec
        if not policy.may_choose:
            raise self._denied(caller, f"may not choose its own routing ({spec.name!r}): its policy {policy.name!r} "
                               "sets may_choose = false; ask for 'router'")
        return spec

    def _denied(self, caller: Caller, what: str) -> PolicyDenied:
        self._metrics.caller_refusals.labels(caller=caller.name, limit="policy").inc()
        return PolicyDenied(f"caller {caller.name!r} {what}")

    async def admit(self, caller: Caller, spec: ModelSpec, strong_model: str, reserve_nano: int = 0) -> Allowance:
        """Rate limits, then the strong budget: a strong call reserved, and ``reserve_nano`` dollars of it (what a
        strong answer may cost), so that concurrent requests can never pass the budget together."""
        allowance = Allowance(caller)
        policy = caller.policy
        if policy is None:
            return allowance
        name, limits = caller.name, self.limits
        strong = not spec.concrete or spec.name == strong_model
        window = policy.budget_window_s
        extra: list[tuple[str, Check]] = []
        if policy.tokens_per_minute is not None:  # refused once the tokens counted reach the limit
            extra.append(("tpm", Check.room(limits.key("tpm", name), policy.tokens_per_minute, 60.0)))
        if strong and policy.strong_cost_usd is not None:  # spent: no strong call is reserved either
            amount = max(reserve_nano, 1)
            extra.append(("cost", Check(limits.key("cost", name), amount, math.floor(policy.strong_cost_usd * NANO), window)))
        try:
            found = await limits.check(name, policy, extra, strong=strong)
        except StoreUnavailable as exc:
            raise StoreGone(str(exc), retry_after="1") from None
        allowance.unenforced = any(not taken.enforced for taken in found.values())
        rate, tokens, cost, reserved = (found.get(kind) for kind in ("rpm", "tpm", "cost", "strong"))
        if reserved is not None and reserved.enforced and policy.strong_calls is not None:
            self._metrics.strong_calls_left.labels(caller=name).set(max(policy.strong_calls - reserved.used, 0))
        if rate is not None and not rate.allowed:
            raise self._over(caller, "requests_per_minute", policy.requests_per_minute or 0, rate, "requests")
        if tokens is not None and not tokens.allowed:
            raise self._over(caller, "tokens_per_minute", policy.tokens_per_minute or 0, tokens, "tokens")
        if cost is not None and not cost.allowed:
            self._spent(allowance, spec, "strong_cost_usd", f"${policy.strong_cost_usd:g}", cost, window)
        elif reserved is not None and reserved.allowed:
            allowance.reserved = reserved if reserved.enforced else None
        elif reserved is not None:
            self._spent(allowance, spec, "strong_calls", str(policy.strong_calls), reserved, window)
        if cost is not None and cost.allowed and cost.enforced:
            allowance.cost, allowance.cost_reserved = cost, max(reserve_nano, 1)
        return allowance

    def _spent(self, allowance: Allowance, spec: ModelSpec, limit: str, value: str, taken: Taken, window: float) -> None:
        caller = allowance.caller
        if spec.concrete:  # it named the strong model itself: nothing to route weak, so refused
            self._metrics.caller_refusals.labels(caller=caller.name, limit=limit).inc()
            frees = math.ceil(taken.frees_in_s)
            raise OverLimit(
                f"caller {caller.name!r} has spent its strong budget ({limit}={value} per {window:g}s, policy "
                f"{caller.policy.name if caller.policy else ''!r}); it frees in {frees}s. Ask for "
                "'router' to be routed (weak while the budget is spent)", retry_after=str(max(frees, 1)),
            )
        allowance.strong_spent = True

    async def answered(self, allowance: Allowance, strong: bool) -> None:
        """Once the model that answers is known: a reserved strong call it did not make is given back, and a strong
        answer no reservation covered (a concrete weak model's fallback to the strong one) is counted now."""
        reserved, allowance.reserved = allowance.reserved, None
        policy, name = allowance.caller.policy, allowance.caller.name
        if not strong and allowance.cost is not None:  # the dollars reserved for a strong answer that did not happen
            await self.limits.counters.give_back(self.limits.key("cost", name), allowance.cost, allowance.cost_reserved)
            allowance.cost, allowance.cost_reserved = None, 0
        if strong and reserved is None and policy is not None and policy.strong_calls is not None and not allowance.unenforced:
            await self.limits.counters.add(self.limits.key("strong", name), 1, policy.budget_window_s)
            return
        await self.limits.routed(name, reserved, strong)

    def _over(self, caller: Caller, limit: str, value: int, taken: Taken, unit: str) -> OverLimit:
        self._metrics.caller_refusals.labels(caller=caller.name, limit=limit).inc()
        frees = max(math.ceil(taken.frees_in_s), 1)
        return OverLimit(
            f"caller {caller.name!r} is past its limit: {taken.used} {unit} in the last minute, "
            f"{limit}={value} (policy {caller.policy.name if caller.policy else ''!r}); it frees in {frees}s",
            retry_after=str(frees),
        )
