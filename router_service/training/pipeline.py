"""Train, calibrate and evaluate scorers with the router's own embedder."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ..adapters import blocking_embedder
from ..adapters.scorer import OnnxScorer
from ..config import RouterSettings, default_cache_dir
from ..errors import ConfigError
from ..mf import MFWeights, ScorerCard, export_onnx, sigmoid
from .data import HeldOut, canonical_model, default_data_dir, load_battles, mean_correctness, read_jsonl
from .embeddings import EmbeddingStore
from .metrics import routing_curve, thresholds_for_shares
from .mf_train import TrainConfig, train_mf

__all__ = ["REFERENCE_STRONG", "REFERENCE_WEAK", "calibrate", "eval_files", "evaluate", "train_and_export"]

logger = logging.getLogger(__name__)

# The RouteLLM paper's pair: the eval/ benchmarks label exactly these two.
REFERENCE_STRONG = "gpt-4-1106-preview"
REFERENCE_WEAK = "mixtral-8x7b-instruct-v0.1"
SHARES = np.round(np.arange(0.05, 1.0, 0.05), 2)
RANDOM_SEEDS = 20


def train_files(data_dir: Path | None) -> list[Path]:
    return sorted(((data_dir or default_data_dir()) / "train").glob("*.jsonl.gz"))


def eval_files(data_dir: Path | None) -> list[Path]:
    return sorted(((data_dir or default_data_dir()) / "eval").glob("*.jsonl.gz"))


@contextmanager
def embedding_store(settings: RouterSettings) -> Iterator[tuple[str, EmbeddingStore]]:
    """The configured embedder, run synchronously, behind an on-disk cache; closed on exit."""
    with blocking_embedder(settings.embedder) as (name, embed):
        cache = default_cache_dir() / "embeddings" / (name.replace(":", "-").replace("/", "_") + ".npz")
        yield name, EmbeddingStore(cache, embed)


def _read_prompts(path: Path) -> list[str]:
    if not path.is_file():
        raise ConfigError(f"--prompts: {path} does not exist")
    if path.name.endswith((".jsonl", ".jsonl.gz", ".json")):
        return [row["prompt"] for row in read_jsonl(path)]
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def train_and_export(
    settings: RouterSettings,
    *,
    data_dir: Path | None,
    out: Path,
    config: TrainConfig,
    name: str,
    strong: str,
    weak: str,
    keep_ties: bool,
    evaluate: bool,
    method: str = "mf",
) -> ScorerCard:
    files = train_files(data_dir)
    if not files:
        raise ConfigError(f"no training files under {(data_dir or default_data_dir()) / 'train'}: give --data-dir")
    # eval/ is never trained on: the data is decontaminated upstream, and this guard drops any
    # training prompt that still matches an eval prompt (case and punctuation aside).
    held_out = HeldOut(row["prompt"] for path in eval_files(data_dir) for row in read_jsonl(path))
    battles = load_battles(files, keep_ties=keep_ties, held_out=held_out)
    for model in (strong, weak):
        if model not in battles.models:
            raise ConfigError(f"--strong/--weak: {model!r} is not in the training data")
    with embedding_store(settings) as (embedder_name, store):
        embeddings = store.get(battles.prompts)
        if held_out.dropped:
            logger.warning("left %d training prompts out: they match eval/ prompts", held_out.dropped)
        logger.info("training on %d battles, %d prompts, %d models", len(battles), len(battles.prompts), len(battles.models))

        def log_epoch(epoch: int, loss: float) -> None:
            logger.info("epoch %d: loss %.4f", epoch + 1, loss)

        if method == "difficulty":
            weights = _difficulty_weights(files, store, strong, weak, held_out)
        else:
            weights = train_mf(
                embeddings, battles.models, battles.prompt, battles.model_a, battles.model_b, battles.p_a, config,
                on_epoch=log_epoch,
            )
        calibration = weights.win_rate(embeddings, strong, weak)
        training: dict[str, Any] = {
            "data": [f.name for f in files],
            "battles": len(battles),
            "prompts": len(battles.prompts),
            "models": len(battles.models),
            "method": method,
            "config": config.as_dict() if method == "mf" else {"ridge": 10.0},
            "keep_ties": keep_ties,
            "eval_prompts_dropped": held_out.dropped,
            "calibrated_on": "training prompts",
            "trained": dt.date.today().isoformat(),
        }
        card = ScorerCard(
            name=name,
            version=f"{dt.date.today():%Y%m%d}-seed{config.seed}",
            strong_model=strong,
            weak_model=weak,
            embedder=embedder_name,
            thresholds=thresholds_for_shares(calibration, SHARES),
            training=training,
        )
        export_onnx(weights, card, out)
        if evaluate:
            training["eval"] = {
                bench: {k: round(v, 4) for k, v in result["scorer"].items()}
                for bench, result in _evaluate_scorer(out, settings, store, eval_files(data_dir)).items()
            }
            card = ScorerCard(**{**card.__dict__, "training": training})
            export_onnx(weights, card, out)
        return card


def _difficulty_weights(
    files: list[Path], store: EmbeddingStore, strong: str, weak: str, held_out: HeldOut
) -> MFWeights:
    """Ridge regression of mean correctness on the correctness files, as a rank-1 MF.

    The score ranks prompts by predicted difficulty (harder: more likely to need the
    strong model); its scale is fixed (the sigmoid of the standardised prediction: a typical
    prompt scores 0.5, one a standard deviation harder 0.73), so use
    it with strong-call shares and calibration rather than absolute thresholds."""
    from .difficulty import as_mf, fit_difficulty

    prompts, accuracy = mean_correctness(files, skip=held_out)
    if not prompts:
        raise ConfigError("--method difficulty needs correctness (score) files in the training data")
    embeddings = store.get(prompts)
    u, c = fit_difficulty(embeddings, accuracy)
    projected = embeddings @ u
    scale = 1.0 / (float(np.std(projected)) or 1.0)
    # Standardise on the training prompts, so scores and thresholds read as a spread around 0.5.
    return as_mf(u, c, a=scale, b=scale * (c + float(np.mean(projected))), strong=strong, weak=weak)


def _scorer(path: Path) -> OnnxScorer:
    return OnnxScorer(path.stem, path)


def calibrate(settings: RouterSettings, scorer_path: Path, prompts_path: Path, out: Path) -> dict[str, float]:
    """Rewrite the scorer's thresholds so the shares hold on the given prompts."""
    scorer = _scorer(scorer_path)
    prompts = _read_prompts(prompts_path)
    if len(prompts) < 20:
        raise ConfigError(f"--prompts: {len(prompts)} prompts is too few to calibrate; give at least 20")
    with embedding_store(settings) as (_, store):
        scores = scorer.model_scores_sync(store.get(prompts))
    win_rate = sigmoid(scores[:, scorer.strong_index] - scores[:, scorer.weak_index])
    thresholds = thresholds_for_shares(win_rate, SHARES)
    model = onnx.load(str(scorer_path))
    props = {p.key: p.value for p in model.metadata_props}
    props["scorer.thresholds"] = json.dumps(thresholds, sort_keys=True)
    training = json.loads(props.get("scorer.training", "{}"))
    training["calibrated_on"] = f"{prompts_path.name} ({len(prompts)} prompts)"
    props["scorer.training"] = json.dumps(training, sort_keys=True)
    onnx.helper.set_model_props(model, props)
    onnx.save_model(model, str(out))
    return thresholds


def _eval_battles(path: Path) -> tuple[list[str], np.ndarray, str, str]:
    """Prompts and per-prompt gain (+1 strong-only right, -1 weak-only, 0 tie)."""
    prompts, gain, pairs = [], [], set()
    for row in read_jsonl(path):
        prompts.append(row["prompt"])
        gain.append({"model_a": 1.0, "model_b": -1.0}.get(row["winner"], 0.0))
        pairs.add((canonical_model(row["model_a"]), canonical_model(row["model_b"])))
    if len(pairs) != 1:
        raise ConfigError(f"--data: {path} mixes model pairs {sorted(pairs)}; one strong/weak pair per file")
    (strong, weak), = pairs
    return prompts, np.asarray(gain), strong, weak


def _evaluate_scorer(
    scorer_path: Path, settings: RouterSettings, store: EmbeddingStore, files: Iterable[Path]
) -> dict[str, dict[str, Any]]:
    scorer = _scorer(scorer_path)
    results: dict[str, dict[str, Any]] = {}
    for path in files:
        prompts, gain, strong, weak = _eval_battles(path)
        if strong not in scorer.models or weak not in scorer.models:
            logger.warning("%s: pair %s/%s unknown to the scorer; using its default pair", path.name, strong, weak)
            strong, weak = scorer.strong_model, scorer.weak_model
        scores = scorer.model_scores_sync(store.get(prompts))
        win_rate = sigmoid(scores[:, scorer.models.index(strong)] - scores[:, scorer.models.index(weak)])
        curve = routing_curve(win_rate, gain)
        rng = np.random.default_rng(0)
        randoms = [routing_curve(rng.random(len(gain)), gain) for _ in range(RANDOM_SEEDS)]
        results[path.name.split(".")[0]] = {
            "scorer": _metrics(curve),
            "random": {k: float(np.mean([_metrics(r)[k] for r in randoms])) for k in ("apgr", "cpt50", "cpt80")},
            "curve": curve,
        }
    return results


def _metrics(curve: Any) -> dict[str, float]:
    return {"apgr": curve.apgr, "cpt50": curve.cpt(0.5), "cpt80": curve.cpt(0.8)}


def evaluate(
    settings: RouterSettings, scorer_path: Path, files: Iterable[Path], *, plot: Path | None
) -> dict[str, dict[str, Any]]:
    with embedding_store(settings) as (_, store):
        results = _evaluate_scorer(scorer_path, settings, store, files)
    if plot is not None:
        _plot(results, plot)
    for result in results.values():
        result.pop("curve")
    return results


def _plot(results: dict[str, dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4.2), squeeze=False)
    for ax, (name, result) in zip(axes[0], results.items(), strict=True):
        curve = result["curve"]
        ax.plot(curve.shares * 100, curve.pgr * 100, label=f"router (APGR {result['scorer']['apgr']:.3f})")
        ax.plot([0, 100], [0, 100], "--", color="grey", label=f"random (APGR {result['random']['apgr']:.3f})")
        ax.set_title(name)
        ax.set_xlabel("calls to the strong model (%)")
        ax.set_ylabel("performance gap recovered (%)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
