"""A shadow scorer's record against the scorer it shadows: how often they agree, how alike they score.

Before switching scorers a user wants to know what would change: the share of routes the
new one would decide differently, and whether it ranks prompts alike. Both come from
running sums (constant memory, O(1) a route), kept since either scorer was loaded.
"""

from __future__ import annotations

import math

from .domain import ShadowStats

__all__ = ["ShadowRecord"]


class ShadowRecord:
    def __init__(self) -> None:
        self.samples = 0  # routes both scored
        self.decided = 0  # of those, the ones the shadow could decide (it may be uncalibrated for a share)
        self.agreed = 0
        self._sx = self._sy = self._sxx = self._syy = self._sxy = 0.0

    def add(self, serving: float, shadow: float, serving_strong: bool, shadow_strong: bool | None) -> None:
        self.samples += 1
        self._sx += serving
        self._sy += shadow
        self._sxx += serving * serving
        self._syy += shadow * shadow
        self._sxy += serving * shadow
        if shadow_strong is not None:
            self.decided += 1
            self.agreed += shadow_strong == serving_strong

    @property
    def agreement(self) -> float:
        return self.agreed / self.decided if self.decided else math.nan

    @property
    def correlation(self) -> float:
        n = self.samples
        if n < 2:
            return math.nan
        cov = self._sxy - self._sx * self._sy / n
        var_x = self._sxx - self._sx * self._sx / n
        var_y = self._syy - self._sy * self._sy / n
        if var_x <= 0.0 or var_y <= 0.0:
            return math.nan
        return max(-1.0, min(1.0, cov / math.sqrt(var_x * var_y)))

    def stats(self) -> ShadowStats:
        return ShadowStats(self.samples, self.agreement, self.correlation)
