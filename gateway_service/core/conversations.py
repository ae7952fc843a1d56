"""Stored conversations (OpenAI Responses' ``previous_response_id``): kept in Redis, fleet-wide, per caller, with a TTL.

A conversation is stored as its client API wrote it (opaque bytes to this store), under the caller's name:
``<prefix>:conv:<caller>:<id>``, so one caller can never read another's, whatever id it guesses. Only with
``[redis]`` set: a per-process store would answer on one replica and not on the next, behind a balancer.
"""

from __future__ import annotations

import asyncio
import logging

from service_core.quota import RedisCounters

from ..config import ConversationSettings
from ..errors import InvalidRequest

__all__ = ["ConversationStore"]

logger = logging.getLogger(__name__)


class ConversationStore:
    def __init__(self, redis: RedisCounters | None, settings: ConversationSettings) -> None:
        self._redis = redis
        self._settings = settings

    @property
    def enabled(self) -> bool:
        return self._redis is not None

    def _key(self, caller: str, conversation: str) -> str:
        assert self._redis is not None
        return self._redis.key(f"conv:{caller}:{conversation}")

    async def load(self, caller: str, conversation: str, setting: str) -> bytes:
        """The stored conversation; refused (400) when there is none for this caller, or no Redis to keep them."""
        if self._redis is None:
            raise InvalidRequest(
                f"{setting} needs stored conversations, which this gateway keeps only with [redis] set "
                "(every replica then shares them); or send the whole conversation (as Codex does, with store: false)"
            )
        try:
            async with asyncio.timeout(self._settings.timeout_s):
                stored = await self._redis.client.get(self._key(caller, conversation))
        except (TimeoutError, OSError, self._redis.errors) as exc:
            raise InvalidRequest(f"{setting} {conversation!r} could not be read: Redis did not answer ({exc!r}); retry") from None
        if stored is None:
            raise InvalidRequest(
                f"{setting} {conversation!r} was not found: it was never stored for this caller, or it is older than "
                f"conversations.ttl_s={self._settings.ttl_s:g}"
            )
        return stored if isinstance(stored, bytes) else str(stored).encode()

    async def save(self, caller: str, conversation: str, data: bytes) -> bool:
        """Keep ``data`` for ``conversations.ttl_s``; false (and one warning) when Redis did not take it."""
        if self._redis is None:
            return False
        try:
            async with asyncio.timeout(self._settings.timeout_s):
                await self._redis.client.set(self._key(caller, conversation), data, ex=max(int(self._settings.ttl_s), 1))
        except (TimeoutError, OSError, self._redis.errors) as exc:
            logger.warning("conversation %s of caller %r was not stored: Redis did not answer (%r)", conversation, caller, exc)
            return False
        return True
