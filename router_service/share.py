"""Live share control: the strong share asked for holds on the traffic actually seen.

A threshold calibrated offline sends the asked share of *the calibration prompts* to the
strong model; when live traffic is easier or harder, the realised share (and the bill)
drifts. Here each scorer keeps the scores of its most recent prompts in a bounded window
and, once it has seen ``warmup`` of them, a share request uses the (1 - share) quantile of
that window as its threshold, so that share of recent traffic scores above it.

Why a bounded window rather than a decayed quantile sketch: the window is exact, has one
easily explained parameter (how many recent prompts count), forgets old traffic completely,
and costs a sort of ``window`` floats every ``refresh`` prompts (about 50 us for 1,000), which
is nothing beside an embedding. Each replica estimates on the traffic it sees, one window per caller
(``CallerWindows``).
"""

from __future__ import annotations

from collections import OrderedDict, deque

import numpy as np

__all__ = ["CallerWindows", "LiveShare", "share_key"]

FEEDBACK = 1.0  # how strongly the realised share's error moves the quantile (1: by as much as the error)


def share_key(share: float) -> str:
    """A share asked, to a tenth of a percent ("50", "12.5"): the realised shares kept are bounded (1,001 at most),
    however many distinct values callers send."""
    return f"{round(min(max(share, 0.0), 1.0) * 1000) / 10:g}"


class LiveShare:
    """Recent scores of one scorer, and the thresholds they give for strong-call shares."""

    def __init__(self, window: int, warmup: int, refresh: int = 50) -> None:
        self._window = window
        self._scores: deque[float] = deque(maxlen=window)
        # Per share asked ("50" for 50%): strong or not, for the last ``warmup`` calls of that policy.
        self._routed: dict[str, deque[bool]] = {}
        self._warmup = warmup
        self._refresh = refresh
        self._since_sort = 0
        self._sorted: np.ndarray | None = None

    @property
    def samples(self) -> int:
        return len(self._scores)

    @property
    def ready(self) -> bool:
        return len(self._scores) >= self._warmup

    def observe(self, score: float) -> None:
        self._scores.append(score)
        self._since_sort += 1

    def routed(self, share_key: str, strong: bool) -> float:
        """Record a share-policy decision; the realised strong share of that policy's recent calls."""
        recent = self._routed.setdefault(share_key, deque(maxlen=self._warmup))
        recent.append(strong)
        return sum(recent) / len(recent)

    def threshold(self, share: float) -> float | None:
        """The threshold that sends ``share`` of recent traffic strong; None until warmed up.

        The quantile is of the recent scores, nudged by how far this policy's recent calls
        already are from the share (feedback): a run of strong calls tightens the next
        threshold, so the realised share stays closer to the target than chance alone would."""
        if not self.ready:
            return None
        if share <= 0.0:
            return 1.0
        if share >= 1.0:
            return 0.0
        recent = self._routed.get(share_key(share))
        if recent:
            share = min(max(share - FEEDBACK * (sum(recent) / len(recent) - share), 0.0), 1.0)
        if self._sorted is None or self._since_sort >= self._refresh:
            self._sorted = np.sort(np.fromiter(self._scores, float, len(self._scores)))
            self._since_sort = 0
        # Strong when score >= threshold: the (1 - share) quantile, as the offline calibration does.
        return float(np.quantile(self._sorted, 1.0 - share, method="higher"))


class CallerWindows:
    """One live-share window per caller, so one caller's traffic never moves another's threshold.

    Why a window per caller and not one shared window with weights: a caller's share is asked of its own
    traffic (a team sending only hard prompts at 50% gets half of *its* prompts strong), a shared window
    would answer for the mix, and a flood by one caller would still move everyone's quantile. The cost is
    a warm-up per caller: until a caller has sent ``warmup`` prompts, its requests use the calibrated
    threshold. Windows are bounded per caller of the router: a name ``owner/name`` is a window the router caller
    ``owner`` keeps for one of its own callers (RouteRequest.caller), and each owner keeps its ``max_callers`` most
    recently active; one owner sending many names evicts only its own, never another owner's or the owners' own."""

    def __init__(self, window: int, warmup: int, max_callers: int = 1024) -> None:
        self._window, self._warmup, self._max = window, warmup, max_callers
        self._owners: dict[str, LiveShare] = {}  # the router callers' own windows: one each, configured identities
        self._by_owner: dict[str, OrderedDict[str, LiveShare]] = {}

    def of(self, caller: str) -> LiveShare:
        owner, slash, name = caller.partition("/")
        if not slash:
            live = self._owners.get(owner)
            if live is None:
                live = self._owners[owner] = LiveShare(self._window, self._warmup)
            return live
        windows = self._by_owner.setdefault(owner, OrderedDict())
        found = windows.get(name)
        if found is None:
            found = windows[name] = LiveShare(self._window, self._warmup)
            if len(windows) > self._max:
                windows.popitem(last=False)
        else:
            windows.move_to_end(name)
        return found

    def peek(self, caller: str) -> LiveShare | None:
        owner, slash, name = caller.partition("/")
        if not slash:
            return self._owners.get(owner)
        windows = self._by_owner.get(owner)
        return windows.get(name) if windows is not None else None
