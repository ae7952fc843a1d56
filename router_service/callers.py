"""Services calling Route directly, by name: each caller's policy, its live-share window, its limits.

The caller is the name of the bearer token its call carries (``[[callers]]``; the shared
``auth.token`` is the caller ``default``; no tokens at all: ``anonymous``). A caller that asks on
behalf of its own callers (the gateway) names them in ``RouteRequest.caller``: the live-share window
is then ``<router caller>/<that name>``, so a name only ever splits the asking caller's own traffic.
"""

from __future__ import annotations

import math
from dataclasses import replace

from service_core.auth import bearer_token
from service_core.callers import CallerLimits, Callers, Identity, window_of
from service_core.grpc_handlers import Context
from service_core.quota import Counters, StoreUnavailable, Taken

from .config import RouterCallerPolicy, RouterSettings
from .domain import RouteQuery
from .errors import BudgetStoreUnavailable, OverLimit, PolicyDenied
from .metrics import RouterMetrics

__all__ = ["RouterCallers"]

class RouterCallers:
    def __init__(self, settings: RouterSettings, counters: Counters, metrics: RouterMetrics) -> None:
        self.callers = Callers(settings.callers, settings.auth.resolve_tokens("auth"))
        self._policies = {p.name: p for p in settings.caller_policies}
        self._limits = CallerLimits(counters, "router")
        self._metrics = metrics

    def identify(self, context: Context) -> Identity:
        """The caller of this call (the interceptor has already refused unknown tokens)."""
        authorization = dict(context.invocation_metadata() or ()).get("authorization")
        identity = self.callers.identify(bearer_token(authorization if isinstance(authorization, str) else None))
        return identity or Identity("unknown", None)

    def policy(self, identity: Identity) -> RouterCallerPolicy | None:
        return self._policies[identity.policy] if identity.policy else self._policies.get("default")

    async def admit(self, identity: Identity, query: RouteQuery) -> tuple[RouteQuery, Taken | None]:
        """The query as the caller's policy shapes it (its window, its share), and a reserved strong call."""
        base = window_of(identity.name)
        query = replace(query, caller=f"{base}/{query.caller}" if query.caller else base)
        policy = self.policy(identity)
        if policy is None:
            return query, None
        chose = query.threshold is not None or query.strong_share is not None
        if chose and not policy.may_choose:
            self._refused(identity, "policy")
            raise PolicyDenied(
                f"caller {identity.name!r} may not choose its own threshold or strong_share: its policy "
                f"{policy.name!r} sets may_choose = false; leave both unset"
            )
        if not chose:
            query = replace(query, threshold=policy.threshold, strong_share=policy.strong_share)
        try:
            found = await self._limits.check(identity.name, policy, strong=not query.strong_spent)
        except StoreUnavailable as exc:
            raise BudgetStoreUnavailable(str(exc)) from None
        rate, reserved = found.get("rpm"), found.get("strong")
        if rate is not None and not rate.allowed:
            self._refused(identity, "requests_per_minute")
            frees = max(math.ceil(rate.frees_in_s), 1)
            raise OverLimit(
                f"caller {identity.name!r} is past its limit: {rate.used} calls in the last minute, "
                f"requests_per_minute={policy.requests_per_minute} (policy {policy.name!r}); it frees in {frees}s",
                retry_after=str(frees),
            )
        if reserved is not None and not reserved.allowed:
            query = replace(query, strong_spent=True)
        return query, reserved

    async def routed(self, identity: Identity, reserved: Taken | None, routed_strong: bool) -> None:
        await self._limits.routed(identity.name, reserved, routed_strong)

    def _refused(self, identity: Identity, limit: str) -> None:
        self._metrics.caller_refusals.labels(caller=identity.name, limit=limit).inc()
