"""Windowed counters (strong-call budgets, rate limits, spend budgets), per process or fleet-wide on Redis.

One algorithm in both places: a sliding window of ``SLICES`` slices (each ``window_s / SLICES``),
counting the slice now and the ``SLICES`` before it. A take is refused when the count plus the
amount passes the limit, so any span of ``window_s`` holds at most ``limit``: a strict bound, a
little conservative (the oldest slice counts up to one slice longer than the window). Counts are
integers (calls, tokens, micro-dollars).

``LocalCounters`` keeps them in this process (one replica, or per process as before Redis).
``RedisCounters`` keeps them in one Redis hash per counter, read and changed by one Lua script on
Redis's own clock (replicas' clocks need not agree). Every Redis call has a deadline
(``redis.timeout_ms``); past it, or with Redis gone, ``Counters`` answers by ``redis.on_unavailable``
(serve unenforced and flagged, fall back to this process's counters, or refuse), writes one warning a
minute, and tries Redis again after ``redis.retry_s``: never a hang, never a lost request.
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

from pydantic import Field, SecretStr

from .settings import Section, secret_value

__all__ = ["Check", "Counters", "LocalCounters", "RedisCounters", "RedisSettings", "StoreUnavailable", "Taken"]

logger = logging.getLogger(__name__)

SLICES = 10
WARN_EVERY_S = 60.0
SLOW_IN_ROW = 3  # calls in a row past timeout_ms that make Redis "down" (one slow call is that request's alone)


class RedisSettings(Section):
    """Fleet-wide budgets, rate limits and spend: every replica pointed at one Redis shares them."""

    url: str | None = Field(
        None, description="redis://host:6379/0 (rediss:// for TLS); unset: counters are per process"
    )
    password: SecretStr | None = None
    password_env: str | None = Field(None, description="name of the env variable holding the password")
    tls_ca: Path | None = Field(None, description="PEM CA of Redis's certificate (with rediss://)")
    prefix: str = Field("routestack", min_length=1, description="key prefix: several stacks may share one Redis")
    timeout_ms: float = Field(50.0, gt=0, description="longest wait for Redis on a request's path")
    max_connections: int = Field(
        1024, ge=1, description="connections to Redis per process; a request past them waits for one (within "
        "timeout_ms), it never counts as Redis being down",
    )
    retry_s: float = Field(1.0, gt=0, description="after a failure, Redis is tried again after this long")
    on_unavailable: Literal["serve", "local", "refuse"] = Field(
        "serve", description="Redis slow or gone: serve unenforced (flagged), count in this process, or refuse (503)"
    )

    def resolve_password(self) -> str | None:
        return secret_value(self.password, self.password_env)


@dataclass(frozen=True)
class Taken:
    """What a take found: allowed or not, the count in the window after it, and when room frees."""

    allowed: bool
    used: int
    frees_in_s: float
    slice: int = 0  # where it was counted, for give_back
    enforced: bool = True  # false: the shared store was unavailable and the take was not counted


class StoreUnavailable(Exception):
    """The shared store did not answer in time and on_unavailable is "refuse"."""


@dataclass(frozen=True)
class Check:
    """One counter of a request's checks: ``amount`` against ``limit`` (None: counted, never refused) in a window of
    ``window_s``. ``gate``: refused, it ends the checks (those after it are neither counted nor answered)."""

    key: str
    amount: int
    limit: int | None
    window_s: float
    gate: bool = True

    @classmethod
    def room(cls, key: str, limit: int, window_s: float) -> Check:
        """Counts nothing: allowed while the window holds less than ``limit``, room for one more (a limit of 0 never
        has room; -1, its limit less one, would read as no limit on Redis)."""
        return cls(key, 0, limit - 1, window_s) if limit > 0 else cls(key, 1, 0, window_s)


class CounterStore(Protocol):
    async def take_all(self, checks: Sequence[Check]) -> list[Taken]: ...

    async def give_back(self, key: str, taken: Taken, amount: int) -> None: ...

    async def aclose(self) -> None: ...


def _slice_of(now_s: float, window_s: float) -> int:
    return int(now_s // (window_s / SLICES))


def _frees_in(oldest: int, window_s: float, now_s: float) -> float:
    width = window_s / SLICES
    return max((oldest + SLICES + 1) * width - now_s, 0.0)


class LocalCounters:
    """Counters in this process; with several processes or replicas, each has its own."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._counts: dict[str, dict[int, int]] = {}

    async def take_all(self, checks: Sequence[Check]) -> list[Taken]:
        return self.take_all_now(checks)

    def take_all_now(self, checks: Sequence[Check]) -> list[Taken]:
        out = []
        for check in checks:
            taken = self.take_now(check.key, check.amount, check.limit, check.window_s)
            out.append(taken)
            if not taken.allowed and check.gate:
                break
        return out

    def take_now(self, key: str, amount: int, limit: int | None, window_s: float) -> Taken:
        now = self._clock()
        current = _slice_of(now, window_s)
        slices = self._counts.setdefault(key, {})
        for old in [s for s in slices if s < current - SLICES]:
            del slices[old]
        used = sum(slices.values())
        oldest = min((s for s, n in slices.items() if n > 0), default=current)
        if limit is not None and used + amount > limit:
            return Taken(False, used, _frees_in(oldest, window_s, now), current)
        if amount:
            slices[current] = slices.get(current, 0) + amount
        return Taken(True, used + amount, _frees_in(oldest, window_s, now), current)

    async def give_back(self, key: str, taken: Taken, amount: int) -> None:
        slices = self._counts.get(key)
        if slices is not None and taken.slice in slices:
            slices[taken.slice] -= amount

    async def aclose(self) -> None:
        return None


# KEYS: one hash (slice -> count) per check. ARGV: slices, then per check: slice width in ms, amount, limit (-1: none),
# ttl s, gate (1/0). Returns per check answered: allowed (0/1), used after, ms until the oldest counted slice leaves,
# slice. All checks of a request in one call: one round trip, atomic.
_TAKE_ALL = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local slices = tonumber(ARGV[1])
local out = {}
for k = 1, #KEYS do
  local a = 2 + (k - 1) * 5
  local width = tonumber(ARGV[a])
  local amount = tonumber(ARGV[a + 1])
  local limit = tonumber(ARGV[a + 2])
  local current = math.floor(now_ms / width)
  local fields = redis.call('HGETALL', KEYS[k])
  local used = 0
  local oldest = current
  for i = 1, #fields, 2 do
    local s = tonumber(fields[i])
    local n = tonumber(fields[i + 1])
    if s < current - slices then
      redis.call('HDEL', KEYS[k], fields[i])
    else
      used = used + n
      if n > 0 and s < oldest then oldest = s end
    end
  end
  local frees_ms = (oldest + slices + 1) * width - now_ms
  if limit >= 0 and used + amount > limit then
    table.insert(out, 0); table.insert(out, used); table.insert(out, frees_ms); table.insert(out, current)
    if tonumber(ARGV[a + 4]) == 1 then return out end
  else
    if amount ~= 0 then
      redis.call('HINCRBY', KEYS[k], current, amount)
      redis.call('EXPIRE', KEYS[k], tonumber(ARGV[a + 3]))
    end
    table.insert(out, 1); table.insert(out, used + amount); table.insert(out, frees_ms); table.insert(out, current)
  end
end
return out
"""


class RedisCounters:
    """Counters in Redis, shared by every replica that names the same URL and prefix."""

    def __init__(self, settings: RedisSettings) -> None:
        from redis.asyncio import BlockingConnectionPool, Redis  # the official client; only where Redis is configured
        from redis.asyncio.retry import Retry  # the asyncio one: redis 8 warns about (and converts) the other
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError

        assert settings.url is not None
        timeout = settings.timeout_ms / 1e3
        extra: dict[str, Any] = {}
        if settings.tls_ca is not None:
            extra["ssl_ca_certs"] = str(settings.tls_ca)
            extra["ssl_cert_reqs"] = ssl.CERT_REQUIRED
        # No retries inside the client (take_all retries once itself); Counters bounds every call by timeout_ms.
        # A blocking pool: a request past max_connections waits for a free connection (bounded by timeout_ms) rather
        # than failing at once as redis-py's default pool does at its 100th, which read as "Redis down" for everyone.
        pool = BlockingConnectionPool.from_url(
            settings.url, max_connections=settings.max_connections, timeout=timeout, password=settings.resolve_password(),
            socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0), health_check_interval=0,
            **extra,
        )
        self.client = Redis.from_pool(pool)  # it owns the pool: aclose() closes its connections
        self._connection_error = ConnectionError
        from redis.exceptions import RedisError

        self.errors = RedisError  # what a call that Redis could not answer raises
        self._prefix = settings.prefix
        self._take_all = self.client.register_script(_TAKE_ALL)

    def key(self, key: str) -> str:
        return f"{self._prefix}:{key}"

    async def take_all(self, checks: Sequence[Check]) -> list[Taken]:
        keys = [self.key(c.key) for c in checks]
        args: list[int] = [SLICES]
        for c in checks:
            width_ms = max(int(c.window_s * 1e3 / SLICES), 1)
            ttl = max(math.ceil(c.window_s * (SLICES + 2) / SLICES), 1)
            args += [width_ms, c.amount, -1 if c.limit is None else c.limit, ttl, int(c.gate)]
        try:
            reply = await self._take_all(keys=keys, args=args)
        except self._connection_error:  # a pooled connection from before a Redis restart: once more, on a new one
            reply = await self._take_all(keys=keys, args=args)
        return [
            Taken(bool(reply[i]), int(reply[i + 1]), max(int(reply[i + 2]), 0) / 1e3, int(reply[i + 3]))
            for i in range(0, len(reply), 4)
        ]

    async def give_back(self, key: str, taken: Taken, amount: int) -> None:
        await self.client.hincrby(self.key(key), str(taken.slice), -amount)

    async def aclose(self) -> None:
        await self.client.aclose()


class Counters:
    """The counters a service uses: Redis when configured (with its deadline and fallback), else local."""

    def __init__(self, settings: RedisSettings, on_state: Callable[[bool], None] | None = None) -> None:
        self.settings = settings
        self.local = LocalCounters()
        self.shared: RedisCounters | None = RedisCounters(settings) if settings.url else None
        self._down_until = 0.0
        self._warned_at = -math.inf
        self._on_state = on_state or (lambda up: None)
        self.unavailable = 0  # requests answered without the shared store, since start
        self._slow = 0  # calls in a row that timed out


    async def take(self, key: str, amount: int, limit: int | None, window_s: float) -> Taken:
        """Count ``amount`` against ``limit`` in the window, unless it would pass it."""
        (taken,) = await self.take_all([Check(key, amount, limit, window_s)])
        return taken

    async def take_all(self, checks: Sequence[Check]) -> list[Taken]:
        """A request's checks in order, in one round trip; a refused gate ends them (the list is shorter)."""
        if self.shared is None:
            return self.local.take_all_now(checks)
        if time.monotonic() < self._down_until:
            return self._without_redis(checks, None)
        try:
            async with asyncio.timeout(self.settings.timeout_ms / 1e3):
                taken = await self.shared.take_all(checks)
        except TimeoutError as exc:  # slow: this request goes without; Redis is called down after SLOW_IN_ROW of them
            self._slow += 1
            if self._slow >= SLOW_IN_ROW:
                return self._without_redis(checks, exc)
            return self._answered_without(checks)
        except Exception as exc:  # noqa: BLE001 - any failure of the store: refused connections, errors
            return self._without_redis(checks, exc)
        self._slow = 0
        if self._down_until:
            self._down_until = 0.0
            self._on_state(True)
            logger.warning("Redis at %s answers again: budgets and rate limits are fleet-wide again", self._where())
        return taken

    async def add(self, key: str, amount: int, window_s: float) -> Taken:
        """Count ``amount`` with no limit (what a request used, known after it)."""
        return await self.take(key, amount, None, window_s)

    async def give_back(self, key: str, taken: Taken, amount: int) -> None:
        """Undo a take (a strong call reserved, then not made)."""
        if not taken.allowed or not amount:
            return
        if self.shared is None or not taken.enforced:
            if not taken.enforced and self.settings.on_unavailable != "local":
                return
            await self.local.give_back(key, taken, amount)
            return
        try:
            async with asyncio.timeout(self.settings.timeout_ms / 1e3):
                await self.shared.give_back(key, taken, amount)
        except Exception as exc:  # noqa: BLE001 - the reservation stays counted: conservative, never an error
            self._failed(exc)

    def _without_redis(self, checks: Sequence[Check], exc: BaseException | None) -> list[Taken]:
        if exc is not None:
            self._failed(exc)
        return self._answered_without(checks)

    def _answered_without(self, checks: Sequence[Check]) -> list[Taken]:
        """This request's checks as redis.on_unavailable says, without Redis."""
        self.unavailable += 1
        mode = self.settings.on_unavailable
        if mode == "refuse":
            raise StoreUnavailable(
                f"Redis at {self._where()} is unavailable and redis.on_unavailable is 'refuse'; retry shortly"
            )
        if mode == "local":
            return [
                Taken(t.allowed, t.used, t.frees_in_s, t.slice, enforced=False) for t in self.local.take_all_now(checks)
            ]
        return [Taken(True, 0, 0.0, 0, enforced=False) for _ in checks]

    def _failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        first = not self._down_until
        self._down_until = now + self.settings.retry_s
        if first:
            self._on_state(False)
        if now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            logger.warning(
                "Redis at %s is unavailable (%s); budgets and rate limits are %s until it answers (tried again every "
                "%gs; this warning at most once a minute)", self._where(), type(exc).__name__ if str(exc) == "" else exc,
                {"serve": "not enforced (requests are flagged)", "local": "counted per process",
                 "refuse": "refusing requests"}[self.settings.on_unavailable], self.settings.retry_s,
            )

    def _where(self) -> str:
        parts = urlsplit(self.settings.url or "")
        return f"{parts.hostname}:{parts.port or 6379}{parts.path}"  # never the password of redis://:pw@host

    async def aclose(self) -> None:
        if self.shared is not None:
            await self.shared.aclose()

