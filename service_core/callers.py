"""Callers: named identities behind bearer keys, each with an optional policy (what it may ask, what it may spend).

A caller is a key (or several, for rotation: add the new key, roll it out, remove the old) given a
name in config. The name, never the key, is what logs, metrics, capture records and errors show.
Keys are looked up by their SHA-256 digest, so finding the caller costs one hash whatever the number
of callers, and no comparison runs on the key itself.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field, SecretStr, model_validator

from .errors import ConfigError
from .quota import Check, Counters, Taken
from .settings import Section

__all__ = [
    "ANONYMOUS", "SHARED_KEY", "BudgetSettings", "CallerLimits", "CallerSettings", "Callers", "Identity", "check_callers",
    "window_of",
]

ANONYMOUS = "anonymous"  # the caller of a service without keys
SHARED_KEY = "default"  # the caller of a key given without a name (auth.api_keys, auth.token)
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class BudgetSettings(Section):
    """What a caller may spend: how routing chooses for it, strong calls per window, requests per minute."""

    strong_share: float | None = Field(None, ge=0, le=1, description="the strong share its routed requests get")
    threshold: float | None = Field(None, ge=0, le=1, description="or a fixed threshold (not both)")
    may_choose: bool = Field(
        True, description="may it pick its own share or threshold (router-mf-*, strong_share, a named policy)"
    )
    strong_calls: int | None = Field(None, ge=0, description="strong calls per budget_window_s; past it, routed weak")
    budget_window_s: float = Field(3600.0, gt=0, description="the window of the strong budget (sliding)")
    requests_per_minute: int | None = Field(None, ge=1, description="past it: 429 / RESOURCE_EXHAUSTED")

    @model_validator(mode="after")
    def _not_both(self) -> BudgetSettings:
        if self.strong_share is not None and self.threshold is not None:
            raise ValueError("give strong_share or threshold, not both")
        return self


class CallerSettings(Section):
    """One caller: a name, its keys (inline, from an env variable, or a file), and the policy it follows."""

    name: str = Field(pattern=NAME_PATTERN, description="shown in logs, metrics and errors; the key never is")
    api_keys: tuple[SecretStr, ...] = Field((), description="its keys; several while one is rotated")
    api_key_env: str | None = Field(None, description="name of an env variable holding one more key")
    api_keys_file: Path | None = Field(None, description="one key a line; # starts a comment")
    policy: str | None = Field(None, description="the name of its policy; unset: the policy named 'default', if any")
    admin: bool = Field(False, description="may read the spend of every caller (GET /v1/spend)")

    def resolve_keys(self) -> tuple[str, ...]:
        keys = [k.get_secret_value() for k in self.api_keys]
        if self.api_key_env:
            value = os.environ.get(self.api_key_env)
            if not value:
                raise ConfigError(f"callers[{self.name}].api_key_env names {self.api_key_env}, which is unset or empty")
            keys.append(value)
        if self.api_keys_file is not None:
            keys.extend(read_keys_file(self.api_keys_file, f"callers[{self.name}].api_keys_file"))
        if not keys:
            raise ConfigError(f"callers[{self.name}]: give api_keys, api_key_env or api_keys_file")
        return tuple(keys)


def check_callers(callers: Iterable[CallerSettings], policy_names: Sequence[str]) -> None:
    """Unique policy names, and each caller's policy among them (a settings validator of both services)."""
    names = set(policy_names)
    if len(names) != len(policy_names):
        raise ValueError("caller_policies: names must be unique")
    for caller in callers:
        if caller.policy is not None and caller.policy not in names:
            raise ValueError(
                f"callers[{caller.name}].policy {caller.policy!r} is not among caller_policies "
                f"({', '.join(sorted(names)) or 'none configured'})"
            )


def read_keys_file(path: Path, setting: str) -> list[str]:
    if not path.is_file():
        raise ConfigError(f"{setting}: {path} does not exist")
    keys = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            keys.append(line)
    return keys


@dataclass(frozen=True)
class Identity:
    name: str
    policy: str | None  # the policy it names (None: the default policy)
    admin: bool = False


def window_of(name: str) -> str:
    """The live-share window a caller's own requests use: keyless and unnamed-key callers share the default one
    ("", the one Describe shows)."""
    return "" if name in (ANONYMOUS, SHARED_KEY) else name


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class Callers:
    """Who a bearer key belongs to. ``shared_keys``: unnamed keys (one caller, ``default``)."""

    def __init__(self, callers: Iterable[CallerSettings], shared_keys: Iterable[str] = ()) -> None:
        self._by_digest: dict[bytes, Identity] = {}
        names: set[str] = set()
        for caller in callers:
            if caller.name in names or caller.name in (ANONYMOUS, SHARED_KEY):
                raise ConfigError(f"callers: the name {caller.name!r} is taken; names must be unique, and not "
                                  f"{ANONYMOUS!r} or {SHARED_KEY!r}")
            names.add(caller.name)
            for key in caller.resolve_keys():
                self._add(key, Identity(caller.name, caller.policy, caller.admin), caller.name)
        for key in shared_keys:
            self._add(key, Identity(SHARED_KEY, None, admin=not names), SHARED_KEY)
        self.names = frozenset(names)

    def _add(self, key: str, identity: Identity, name: str) -> None:
        digest = _digest(key)
        if digest in self._by_digest and self._by_digest[digest].name != name:
            raise ConfigError(f"callers: {name!r} and {self._by_digest[digest].name!r} share a key; give each its own")
        self._by_digest[digest] = identity

    @property
    def required(self) -> bool:
        """Whether a key is needed at all (any key configured)."""
        return bool(self._by_digest)

    def identify(self, token: str | None) -> Identity | None:
        """The caller of ``token``; without any keys configured, everyone is ``anonymous``; None: refused."""
        if not self._by_digest:
            return Identity(ANONYMOUS, None, admin=True)
        if token is None:
            return None
        return self._by_digest.get(_digest(token))


class CallerLimits:
    """A caller's checks on the service's counters, in one round trip: requests per minute, the service's own
    checks (``extra``: tokens per minute, spend), then one strong call reserved. ``service``: the key prefix, so the
    gateway's and the router's budgets are apart. The reservation is made before routing, so concurrent requests
    can never pass the budget together, and given back when routed weak."""

    def __init__(self, counters: Counters, service: str) -> None:
        self.counters = counters
        self._service = service

    def key(self, kind: str, caller: str) -> str:
        return f"{self._service}:{kind}:{caller}"

    async def check(
        self, caller: str, policy: BudgetSettings, extra: Sequence[tuple[str, Check]] = (), *, strong: bool = True
    ) -> dict[str, Taken]:
        """Each check's answer by kind ("rpm", the extra kinds, "strong"); a refused gate ends them, so a kind
        after it is missing. Raises StoreUnavailable when Redis is gone and on_unavailable is 'refuse'."""
        kinds: list[str] = []
        checks: list[Check] = []
        if policy.requests_per_minute is not None:
            kinds.append("rpm")
            checks.append(Check(self.key("rpm", caller), 1, policy.requests_per_minute, 60.0))
        for kind, check in extra:
            kinds.append(kind)
            checks.append(check)
        if strong and policy.strong_calls is not None:
            kinds.append("strong")
            checks.append(Check(self.key("strong", caller), 1, policy.strong_calls, policy.budget_window_s, gate=False))
        if not checks:
            return {}
        return dict(zip(kinds, await self.counters.take_all(checks), strict=False))

    async def routed(self, caller: str, reserved: Taken | None, routed_strong: bool) -> None:
        """After routing: a reserved strong call the router did not make is given back."""
        if reserved is not None and reserved.allowed and not routed_strong:
            await self.counters.give_back(self.key("strong", caller), reserved, 1)
