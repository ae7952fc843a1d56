"""Admission: a stream slot, overall and per client key, or an immediate 429 with Retry-After.

Slots are context managers, so every path out of a stream (done, error,
client gone, cancelled) gives its slot back. With several worker processes
each holds its own counts against its share of each limit (ceil(limit / workers)), and a
refusal names both the configured limit and the share.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

from ..config import LimitSettings
from ..errors import TooManyStreams

__all__ = ["Admission"]


class Admission:
    def __init__(self, limits: LimitSettings, *, keys_checked: bool, workers: int = 1) -> None:
        self._limits = limits
        self._workers = workers
        self._max_streams = math.ceil(limits.max_streams / workers)
        self._max_per_key = math.ceil(limits.max_streams_per_key / workers)
        self._in_flight = 0
        self._per_key: dict[str, int] = {}
        # A bearer token is an identity only when auth checks it; without auth, one per-key
        # budget shared by every anonymous (or dummy-keyed) client would cap the whole gateway.
        self._keys_checked = keys_checked

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @contextmanager
    def slot(self, client_key: str | None) -> Iterator[None]:
        """Hold a stream slot for the ``with`` block; refuse at once when none is free."""
        key = client_key if self._keys_checked else None
        self._take(key)
        try:
            yield
        finally:
            self._in_flight -= 1
            if key is not None:
                self._per_key[key] -= 1
                if not self._per_key[key]:
                    del self._per_key[key]

    def _take(self, key: str | None) -> None:
        limits = self._limits
        if self._in_flight >= self._max_streams:
            raise TooManyStreams(
                f"{self._in_flight} completions in flight, the limit (limits.max_streams={limits.max_streams}"
                f"{self._share(self._max_streams)}); retry shortly", retry_after="1"
            )
        if key is not None and self._per_key.get(key, 0) >= self._max_per_key:
            raise TooManyStreams(
                f"this API key has {self._per_key[key]} completions in flight, the limit (limits.max_streams_per_key="
                f"{limits.max_streams_per_key}{self._share(self._max_per_key)})", retry_after="1",
            )
        self._in_flight += 1
        if key is not None:
            self._per_key[key] = self._per_key.get(key, 0) + 1

    def _share(self, share: int) -> str:
        return f"; {share} in each of {self._workers} worker processes" if self._workers > 1 else ""
