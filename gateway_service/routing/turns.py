"""Turns: a tool loop stays on the model that started it.

A chat client answers a model's tool call with a ``role: tool`` message and asks again; so do
agents, many times over. Each such request continues the turn its last user message began: a
fresh routing decision there could switch models halfway through the loop (the router's live
threshold moves between two calls). So the model chosen for a turn is remembered under a hash of
the conversation up to its last user message, and a continuation of that turn is sent to it
without asking the router (which also keeps the loop's repeats out of the router's live window).

Per process, in memory (cachetools' TTLCache: bounded, oldest first): behind a load balancer a
continuation that lands on another replica is routed afresh, and the router, which has seen its
last user message, answers it from its cache without counting it again.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Mapping

from cachetools import TTLCache

from service_core.quota import RedisCounters

from ..config import TurnSettings
from ..domain import ChatParams, Message

__all__ = ["TurnMemory", "session_key", "turn_key"]

CONTINUING = frozenset({"tool", "assistant"})


def turn_key(messages: tuple[Message, ...], caller: str = "") -> tuple[str, bool] | None:
    """(the turn's key, whether this request continues it), or None without a user message. The key is the
    caller's: one caller's conversation never continues, overwrites or reveals another's turn."""
    last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=-1)
    if last_user < 0:
        return None
    digest = hashlib.blake2b(digest_size=16)
    digest.update(caller.encode("utf-8", "surrogatepass"))
    digest.update(b"\2")
    for message in messages[: last_user + 1]:
        digest.update(message.role.encode())
        digest.update(b"\0")
        digest.update(message.content.encode("utf-8", "surrogatepass"))
        digest.update(b"\1")
    return digest.hexdigest(), messages[-1].role in CONTINUING


def session_key(params: ChatParams, headers: Mapping[str, str]) -> str | None:
    """The agent session a request belongs to: the client's own id (Claude Code's x-claude-code-session-id header,
    Codex's prompt_cache_key), else the conversation's first user message; None without one."""
    given = params.session or headers.get("x-claude-code-session-id", "")
    if not given:
        first = next((m.content for m in params.messages if m.role == "user"), "")
        if not first:
            return None
        given = hashlib.blake2b(first.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
    return f"session:{given[:256]}"


class TurnMemory:
    """Each caller's turns, bounded per caller (``turns.max_turns_per_caller``): one caller filling its memory evicts
    only its own oldest turns, never another's; the callers remembered are bounded too (``max_turns`` in all).

    With ``[redis]`` (``shared``) the turns live there, under the caller's name with ``remember_s`` to live, so a
    continuation that lands on another replica behind a balancer stays on its turn's model; while Redis does not
    answer (``redis.timeout_ms``), this process's memory stands in."""

    def __init__(self, settings: TurnSettings, shared: RedisCounters | None = None, timeout_s: float = 0.05) -> None:
        self._enabled = settings.remember_s > 0
        self._ttl = settings.remember_s or 1.0
        self._per_caller = settings.max_turns_per_caller
        callers = max(settings.max_turns // max(settings.max_turns_per_caller, 1), 1)
        self._by_caller: TTLCache[str, TTLCache[str, str]] = TTLCache(callers, self._ttl, timer=time.monotonic)
        self._shared, self._timeout_s = shared, timeout_s

    async def model_of(self, caller: str, key: str) -> str | None:
        if not self._enabled:
            return None
        if self._shared is not None:
            try:
                async with asyncio.timeout(self._timeout_s):
                    found = await self._shared.client.get(self._shared.key(f"turn:{caller}:{key}"))
                return found.decode() if isinstance(found, bytes) else found
            except (TimeoutError, OSError, self._shared.errors):
                pass  # this process's memory, below
        turns = self._by_caller.get(caller)
        return turns.get(key) if turns is not None else None

    async def remember(self, caller: str, key: str, model: str) -> None:
        if not self._enabled:
            return
        turns = self._by_caller.get(caller)
        if turns is None:
            turns = TTLCache(self._per_caller, self._ttl, timer=time.monotonic)
        self._by_caller[caller] = turns  # refreshes the caller's own expiry
        turns[key] = model
        if self._shared is not None:
            try:
                async with asyncio.timeout(self._timeout_s):
                    await self._shared.client.set(self._shared.key(f"turn:{caller}:{key}"), model, ex=max(int(self._ttl), 1))
            except (TimeoutError, OSError, self._shared.errors):
                pass  # kept in this process: a continuation on this replica still finds it
