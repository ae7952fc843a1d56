"""The RouteLLM paper's routing metrics: PGR curve, APGR and CPT.

For strong model S and weak model W on a benchmark, route the prompts with
the highest scores to S. At a strong-call share x, the performance gap
recovered is PGR(x) = (quality(router) - quality(W)) / (quality(S) - quality(W));
APGR is its area over x in [0, 1]; CPT(p) is the smallest x with PGR >= p.
Only per-prompt differences matter: +1 where only S is right, -1 where only
W is right, 0 for a tie (both right or both wrong).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["RoutingCurve", "roc_auc", "routing_curve", "thresholds_for_shares"]


@dataclass(frozen=True)
class RoutingCurve:
    shares: np.ndarray  # strong-call share, 0..1
    pgr: np.ndarray  # performance gap recovered at that share

    @property
    def apgr(self) -> float:
        return float(np.trapezoid(self.pgr, self.shares))

    def cpt(self, target: float) -> float:
        """Smallest strong-call share that recovers ``target`` of the gap."""
        reached = np.nonzero(self.pgr >= target - 1e-12)[0]
        return float(self.shares[reached[0]]) if len(reached) else 1.0


def routing_curve(scores: np.ndarray, gain: np.ndarray) -> RoutingCurve:
    """The curve for routing strong in decreasing order of ``scores``.

    Prompts with equal scores are routed together (a threshold cannot split
    them), so ties in the scores are interpolated, not ordered arbitrarily."""
    total = gain.sum()
    if total <= 0:
        raise ValueError("the strong model must beat the weak one on this data for PGR to be defined")
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_gain = scores[order], gain[order]
    # Ends of runs of equal scores: the only shares a threshold can produce.
    ends = np.append(np.nonzero(np.diff(sorted_scores))[0], len(scores) - 1)
    cum = np.cumsum(sorted_gain)[ends]
    shares = np.concatenate([[0.0], (ends + 1) / len(scores)])
    pgr = np.concatenate([[0.0], cum / total])
    return RoutingCurve(shares, pgr)


def thresholds_for_shares(scores: np.ndarray, shares: np.ndarray) -> dict[str, float]:
    """For each share s, the threshold that sends s of these prompts to the strong model."""
    out = {}
    for share in shares:
        # Route strong when score >= threshold: the (1 - s) quantile does that.
        out[f"{share:.2f}"] = float(np.quantile(scores, 1.0 - share, method="higher"))
    return out


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """P(a random positive scores above a random negative), ties counting half (Mann-Whitney U)."""
    positive = np.asarray(positive, bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        raise ValueError("ROC-AUC needs both positive and negative examples")
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    sorted_scores = np.asarray(scores)[order]
    # Average ranks over runs of equal scores.
    starts = np.concatenate([[0], np.nonzero(np.diff(sorted_scores))[0] + 1])
    ends = np.append(starts[1:], len(scores))
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + end + 1) / 2
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
