"""Evaluate a scorer file on held-out data: RouteLLM's APGR / CPT on battle files, and the sanity check.

Battle files (eval/) hold the reference pair's per-prompt outcome; the sanity file (sanity/)
holds prompts marked ``expect: weak | strong``, scored by ROC-AUC and by the share of ``weak``
prompts that go weak at the scorer's own calibrated 50% threshold.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..adapters.scorer import OnnxScorer
from ..errors import ConfigError
from ..mf import sigmoid
from .data import canonical_model, read_jsonl
from .embeddings import EmbeddingStore
from .metrics import RoutingCurve, roc_auc, routing_curve

__all__ = ["eval_battles", "evaluate_scorer", "plot_results", "summary"]

logger = logging.getLogger(__name__)

RANDOM_SEEDS = 20
CURVE_METRICS = ("apgr", "cpt50", "cpt80")
SANITY_METRICS = ("auc", "weak_share_at_50")


def eval_battles(path: Path) -> tuple[list[str], np.ndarray, str, str]:
    """Prompts and per-prompt gain (+1 strong-only right, -1 weak-only, 0 tie)."""
    prompts, gain, pairs = [], [], set()
    for row in read_jsonl(path):
        prompts.append(row["prompt"])
        gain.append({"model_a": 1.0, "model_b": -1.0}.get(row["winner"], 0.0))
        pairs.add((canonical_model(row["model_a"]), canonical_model(row["model_b"])))
    if len(pairs) != 1:
        raise ConfigError(f"--data: {path} mixes model pairs {sorted(pairs)}; one strong/weak pair per file")
    ((strong, weak),) = pairs
    return prompts, np.asarray(gain), strong, weak


def _curve_metrics(curve: RoutingCurve) -> dict[str, float]:
    return {"apgr": curve.apgr, "cpt50": curve.cpt(0.5), "cpt80": curve.cpt(0.8)}


def _win_rate(scorer: OnnxScorer, embeddings: np.ndarray, strong: str, weak: str) -> np.ndarray:
    scores = scorer.model_scores_sync(embeddings)
    return sigmoid(scores[:, scorer.models.index(strong)] - scores[:, scorer.models.index(weak)])


def _battle_result(scorer: OnnxScorer, store: EmbeddingStore, path: Path) -> dict[str, Any]:
    prompts, gain, strong, weak = eval_battles(path)
    if strong not in scorer.models or weak not in scorer.models:
        logger.warning("%s: pair %s/%s unknown to the scorer; using its default pair", path.name, strong, weak)
        strong, weak = scorer.strong_model, scorer.weak_model
    curve = routing_curve(_win_rate(scorer, store.get(prompts), strong, weak), gain)
    rng = np.random.default_rng(0)
    randoms = [_curve_metrics(routing_curve(rng.random(len(gain)), gain)) for _ in range(RANDOM_SEEDS)]
    return {
        "scorer": _curve_metrics(curve),
        "random": {k: float(np.mean([r[k] for r in randoms])) for k in CURVE_METRICS},
        "curve": curve,
    }


def _sanity_result(scorer: OnnxScorer, store: EmbeddingStore, path: Path) -> dict[str, Any]:
    rows = list(read_jsonl(path))
    strong = np.array([row["expect"] == "strong" for row in rows])
    score = _win_rate(scorer, store.get([row["prompt"] for row in rows]), scorer.strong_model, scorer.weak_model)
    weak_share = float(np.mean(score[~strong] < scorer.threshold_for_share(0.5)))
    return {
        "scorer": {"auc": roc_auc(score, strong), "weak_share_at_50": weak_share},
        "random": {"auc": 0.5, "weak_share_at_50": 0.5},
        "scores": (score, strong),
    }


def evaluate_scorer(scorer_path: Path, store: EmbeddingStore, files: Iterable[Path]) -> dict[str, dict[str, Any]]:
    """Per file (by name): the scorer's metrics, a random router's, and what the plot needs."""
    scorer = OnnxScorer(scorer_path.stem, scorer_path)
    results: dict[str, dict[str, Any]] = {}
    for path in files:
        first = next(read_jsonl(path), {})
        evaluate = _sanity_result if "expect" in first else _battle_result
        name = path.name.split(".")[0]
        if name in results:
            name = f"{path.parent.parent.name}/{name}"
        try:
            results[name] = evaluate(scorer, store, path)
        except ValueError as exc:  # e.g. the strong model never beats the weak one here: no gap to recover
            logger.warning("%s: not evaluated: %s", path, exc)
    return results


def summary(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """The mean of each battle metric over the battle files (the --json line's top level)."""
    battles = [r["scorer"] for r in results.values() if "apgr" in r["scorer"]]
    return {k: float(np.mean([b[k] for b in battles])) for k in CURVE_METRICS} if battles else {}


def plot_results(results: dict[str, dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4.2), squeeze=False)
    for ax, (name, result) in zip(axes[0], results.items(), strict=True):
        if "curve" in result:
            curve = result["curve"]
            ax.plot(curve.shares * 100, curve.pgr * 100, label=f"router (APGR {result['scorer']['apgr']:.3f})")
            ax.plot([0, 100], [0, 100], "--", color="grey", label=f"random (APGR {result['random']['apgr']:.3f})")
            ax.set_xlabel("calls to the strong model (%)")
            ax.set_ylabel("performance gap recovered (%)")
        else:
            score, strong = result["scores"]
            bins = np.linspace(0, 1, 21)
            ax.hist(score[~strong], bins, alpha=0.6, label="expect weak")
            ax.hist(score[strong], bins, alpha=0.6, label="expect strong")
            ax.set_xlabel(f"score (AUC {result['scorer']['auc']:.3f}, weak at 50%: {result['scorer']['weak_share_at_50']:.0%})")
            ax.set_ylabel("prompts")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right" if "curve" in result else "upper center")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
