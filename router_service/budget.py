"""A hard budget on strong calls: past it, requests go weak (flagged), never an error.

A token bucket: ``limit`` strong calls per ``window_s``, refilled continuously, so a burst
can spend the whole budget and the budget comes back at limit / window_s calls a second.
Each router replica holds its own bucket: with N replicas the fleet allows N x limit.
"""

from __future__ import annotations

import time

__all__ = ["StrongBudget"]


class StrongBudget:
    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self._per_second = limit / window_s
        self._tokens = float(limit)
        self._at = time.monotonic()

    @property
    def left(self) -> float:
        self._refill()
        return self._tokens

    def take(self) -> bool:
        """Spend one strong call if the budget has one."""
        self._refill()
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(float(self.limit), self._tokens + (now - self._at) * self._per_second)
        self._at = now
