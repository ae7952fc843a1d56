"""What each caller spent, per model and day, and what the same routed requests would have cost all-strong.

Each finished completion is recorded here once: its tokens (the upstream's usage, or estimated at
four characters a token when it sends none, and counted as estimated), its price from [[prices]],
and for a routed request the baseline: the same tokens on the priciest model routing may choose.
Recording is synchronous and in memory (Prometheus counters and a pending tally); a flusher sends
the tally to Redis in one pipeline a few times a second, so Redis is never on the request's path
for spend. When Redis is gone the tally waits and is sent when it answers: nothing is lost; a flush
whose reply was lost may be sent twice (at most one flush interval of spend counted twice).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from service_core.quota import Counters

from ..config import GatewaySettings
from ..metrics import GatewayMetrics
from .policy import NANO, Caller

__all__ = ["SpendBook", "Usage"]

logger = logging.getLogger(__name__)

FIELDS = ("requests", "strong", "prompt_tokens", "completion_tokens", "estimated", "spend_nano", "baseline_nano")
FLUSH_S = 0.25
KEEP_DAYS = 400


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    estimated: bool  # the upstream sent no usage: counted from characters


def estimate_tokens(chars: int) -> int:
    return math.ceil(chars / 4)


class SpendBook:
    def __init__(self, settings: GatewaySettings, counters: Counters, metrics: GatewayMetrics, routable: Iterable[str]) -> None:
        self._prices = settings.model_prices()
        priced = [m for m in routable if m in self._prices]
        # The all-strong baseline: the priciest model routing may choose (by a typical 3:1 prompt:completion mix).
        self.baseline_model = max(priced, key=lambda m: 3 * self._prices[m][0] + self._prices[m][1], default=None)
        self._counters = counters
        self._metrics = metrics
        self._redis = counters.shared
        self._prefix = counters.settings.prefix
        self.totals: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(FIELDS, 0))  # this process
        self._pending: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))  # day -> field -> amount
        self._pending_counts: dict[tuple[str, float], int] = defaultdict(int)  # (counter key, window) -> amount
        self._flusher: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        if self._prices:  # each configured caller's series start at 0, so increase() counts its first completions
            for name in (c.name for c in settings.callers):
                metrics.routed_spend.labels(caller=name)
                metrics.spend_baseline.labels(caller=name)

    def cost_nano(self, model: str, usage: Usage) -> int:
        price = self._prices.get(model)
        if price is None:
            return 0
        return round((usage.prompt_tokens * price[0] + usage.completion_tokens * price[1]) * 1000)  # $/M = 1000 n$/token

    def record(
        self, caller: Caller, model: str, usage: Usage, *, routed: bool, strong: bool, reserved_nano: int = 0
    ) -> None:
        """One finished completion (synchronous: counters now, Redis at the next flush). ``reserved_nano``: what its
        dollar budget reserved before it started, settled here to what it cost (more, or given back)."""
        spend = self.cost_nano(model, usage)
        baseline = self.cost_nano(self.baseline_model, usage) if routed and self.baseline_model else 0
        source = "estimated" if usage.estimated else "upstream"
        metrics = self._metrics
        metrics.caller_tokens.labels(caller=caller.name, model=model, kind="prompt", source=source).inc(usage.prompt_tokens)
        metrics.caller_tokens.labels(caller=caller.name, model=model, kind="completion", source=source).inc(
            usage.completion_tokens
        )
        metrics.spend.labels(caller=caller.name, model=model).inc(spend / NANO)
        if routed:
            metrics.spend_baseline.labels(caller=caller.name).inc(baseline / NANO)
            metrics.routed_spend.labels(caller=caller.name).inc(spend / NANO)
        row = {
            "requests": 1, "strong": int(strong), "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens, "estimated": int(usage.estimated), "spend_nano": spend,
            "baseline_nano": baseline,
        }
        field_prefix = f"{caller.name}|{model}|{'routed' if routed else 'named'}"
        day = dt.datetime.now(dt.UTC).date().isoformat()
        for name, amount in row.items():
            if amount:
                self.totals[f"{day}|{field_prefix}"][name] += amount
                self._pending[day][f"{field_prefix}|{name}"] += amount
        policy = caller.policy
        if policy is not None:
            if policy.tokens_per_minute is not None:
                self._count(f"gw:tpm:{caller.name}", usage.prompt_tokens + usage.completion_tokens, 60.0)
            if policy.strong_cost_usd is not None and strong and spend != reserved_nano:
                self._count(f"gw:cost:{caller.name}", spend - reserved_nano, policy.budget_window_s)
        self._wake.set()

    def _count(self, key: str, amount: int, window_s: float) -> None:
        if self._redis is None:
            self._counters.local.take_now(key, amount, None, window_s)
        else:
            self._pending_counts[key, window_s] += amount

    # -- flushing to Redis ---------------------------------------------------------------

    def start(self) -> None:
        if self._redis is not None and self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_forever(), name="gateway-spend-flush")

    async def _flush_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.flush()
            await asyncio.sleep(FLUSH_S)

    async def flush(self) -> bool:
        """Send the pending tally and counts to Redis; kept for the next flush when it is unavailable."""
        counts, self._pending_counts = self._pending_counts, defaultdict(int)
        for (key, window_s), amount in counts.items():
            taken = await self._counters.add(key, amount, window_s)  # Counters applies redis.on_unavailable
            if not taken.enforced:  # Redis away: kept for the next flush, so what was spent while it was gone counts
                self._pending_counts[key, window_s] += amount
        if not self._pending or self._redis is None:
            return True
        pending, self._pending = self._pending, defaultdict(lambda: defaultdict(int))
        try:
            async with asyncio.timeout(max(self._counters.settings.timeout_ms / 1e3, 1.0)):
                async with self._redis.client.pipeline(transaction=True) as pipe:
                    for day, fields in pending.items():
                        key = f"{self._prefix}:spend:{day}"
                        for field, amount in fields.items():
                            pipe.hincrby(key, field, amount)
                        pipe.expire(key, KEEP_DAYS * 86400)
                    await pipe.execute()
        except Exception as exc:  # noqa: BLE001 - kept, sent again when Redis answers
            for day, fields in pending.items():
                for field, amount in fields.items():
                    self._pending[day][field] += amount
            logger.debug("spend not yet sent to Redis (%s); kept for the next flush", exc)
            return False
        return True

    async def aclose(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
            self._flusher = None
        if self._redis is not None and not await self.flush():
            logger.warning("spend of this process could not be sent to Redis before it stopped (Redis unavailable)")

    # -- reading -------------------------------------------------------------------------

    async def report(self, days: int = 31) -> dict[str, Any]:
        """Spend per caller (and per model and day): fleet-wide from Redis, else this process's."""
        rows: dict[str, dict[str, int]]
        scope = "process"
        if self._redis is not None:
            try:
                rows = await self._read_redis(days)
                scope = "fleet"
            except Exception as exc:  # noqa: BLE001 - the endpoint still answers, saying whose figures these are
                logger.warning("spend: Redis unavailable (%s); answering with this process's figures", exc)
                rows = dict(self.totals)
        else:
            rows = dict(self.totals)
        return summarise(rows, scope, self.baseline_model)

    async def _read_redis(self, days: int) -> dict[str, dict[str, int]]:
        assert self._redis is not None
        today = dt.datetime.now(dt.UTC).date()
        wanted = [(today - dt.timedelta(days=i)).isoformat() for i in range(days)]
        rows: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(FIELDS, 0))
        async with asyncio.timeout(2.0):
            async with self._redis.client.pipeline(transaction=False) as pipe:
                for day in wanted:
                    pipe.hgetall(f"{self._prefix}:spend:{day}")
                replies = await pipe.execute()
        for day, reply in zip(wanted, replies, strict=True):
            for raw_field, raw_amount in reply.items():
                field = raw_field.decode() if isinstance(raw_field, bytes) else str(raw_field)
                caller_model_kind, _, name = field.rpartition("|")
                if name in FIELDS:
                    rows[f"{day}|{caller_model_kind}"][name] += int(raw_amount)
        return rows


def summarise(rows: dict[str, dict[str, int]], scope: str, baseline_model: str | None) -> dict[str, Any]:
    """The JSON of GET /v1/spend: per caller, per caller and model, per day."""
    callers: dict[str, dict[str, Any]] = {}
    by_day: dict[str, dict[str, Any]] = {}
    models: list[dict[str, Any]] = []
    for row_key, row in sorted(rows.items()):
        day, caller, model, kind = row_key.split("|")
        for table, name in ((callers, caller), (by_day, f"{day}|{caller}")):
            entry = table.setdefault(name, {f: 0 for f in ("requests", "routed", "strong", "prompt_tokens",
                                                           "completion_tokens", "estimated", "spend_nano",
                                                           "routed_spend_nano", "baseline_nano")})
            entry["requests"] += row["requests"]
            entry["strong"] += row["strong"]
            entry["prompt_tokens"] += row["prompt_tokens"]
            entry["completion_tokens"] += row["completion_tokens"]
            entry["estimated"] += row["estimated"]
            entry["spend_nano"] += row["spend_nano"]
            if kind == "routed":
                entry["routed"] += row["requests"]
                entry["routed_spend_nano"] += row["spend_nano"]
                entry["baseline_nano"] += row["baseline_nano"]
        models.append({"day": day, "caller": caller, "model": model, "routed": kind == "routed",
                       **{f: row[f] for f in FIELDS}})

    def money(entry: dict[str, Any]) -> dict[str, Any]:
        routed = entry["routed"]
        return {
            "requests": entry["requests"], "routed": routed, "strong": entry["strong"],
            "strong_share": round(entry["strong"] / routed, 4) if routed else None,
            "prompt_tokens": entry["prompt_tokens"], "completion_tokens": entry["completion_tokens"],
            "estimated_requests": entry["estimated"], "spend_usd": entry["spend_nano"] / NANO,
            "routed_spend_usd": entry["routed_spend_nano"] / NANO, "baseline_usd": entry["baseline_nano"] / NANO,
            "saved_usd": (entry["baseline_nano"] - entry["routed_spend_nano"]) / NANO,
        }

    return {
        "scope": scope,
        "baseline_model": baseline_model,
        "callers": {name: money(entry) for name, entry in sorted(callers.items())},
        "days": [{"day": key.split("|")[0], "caller": key.split("|")[1], **money(entry)} for key, entry in sorted(by_day.items())],
        "models": models,
    }
