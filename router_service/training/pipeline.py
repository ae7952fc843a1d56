"""Train, calibrate and evaluate scorers with the router's own embedder."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from ..adapters import blocking_embedder
from ..adapters.scorer import OnnxScorer
from ..config import RouterSettings, default_cache_dir
from ..errors import ConfigError
from ..mf import MFWeights, ScorerCard, export_onnx, sigmoid
from .data import Battles, HeldOut, default_data_dir, load_battles, mean_correctness, read_jsonl, read_prompts
from .embeddings import EmbeddingStore
from .evaluation import evaluate_scorer, plot_results
from .metrics import thresholds_for_shares
from .mf_train import TrainConfig, train_mf

if TYPE_CHECKING:
    from .difficulty import Source

__all__ = [
    "REFERENCE_STRONG", "REFERENCE_WEAK", "calibrate", "eval_files", "evaluate", "held_out", "sanity_files",
    "train_and_export",
]

logger = logging.getLogger(__name__)

# The RouteLLM paper's pair: the eval/ benchmarks label exactly these two.
REFERENCE_STRONG = "gpt-4-1106-preview"
REFERENCE_WEAK = "mixtral-8x7b-instruct-v0.1"
SHARES = np.round(np.arange(0.05, 1.0, 0.05), 2)


DataDirs = Path | Sequence[Path] | None


def _dirs(data_dirs: DataDirs) -> list[Path]:
    if data_dirs is None or (not isinstance(data_dirs, Path) and not data_dirs):
        return [default_data_dir()]
    return [data_dirs] if isinstance(data_dirs, Path) else list(data_dirs)


def _files(data_dirs: DataDirs, split: str) -> list[Path]:
    """A split's files (gzipped or plain JSON lines), folder by folder."""
    return [f for d in _dirs(data_dirs) for f in sorted([*(d / split).glob("*.jsonl.gz"), *(d / split).glob("*.jsonl")])]


def train_files(data_dirs: DataDirs) -> list[Path]:
    return _files(data_dirs, "train")


def eval_files(data_dirs: DataDirs) -> list[Path]:
    return _files(data_dirs, "eval")


def sanity_files(data_dirs: DataDirs) -> list[Path]:
    return _files(data_dirs, "sanity")


def held_out(data_dirs: DataDirs) -> HeldOut:
    """Every eval/ and sanity/ prompt of every folder: training never sees them (case, punctuation and spacing aside)."""
    files = eval_files(data_dirs) + sanity_files(data_dirs)
    return HeldOut(row["prompt"] for path in files for row in read_jsonl(path))


@contextmanager
def embedding_store(settings: RouterSettings) -> Iterator[tuple[str, EmbeddingStore]]:
    """The configured embedder, run synchronously, behind an on-disk cache; closed on exit."""
    with blocking_embedder(settings.embedder) as (name, embed):
        cache = default_cache_dir() / "embeddings" / (name.replace(":", "-").replace("/", "_") + ".npz")
        yield name, EmbeddingStore(cache, embed)


def train_and_export(
    settings: RouterSettings,
    *,
    data_dir: DataDirs,
    out: Path,
    config: TrainConfig,
    name: str,
    strong: str,
    weak: str,
    keep_ties: bool,
    evaluate: bool,
    method: str = "mf",
    weights: Sequence[float] = (),
) -> ScorerCard:
    """Train on the train/ files of every folder of ``data_dir``; ``weights[k]``: how much folder k's
    labels weigh together, against the first folder's (default 1: as much as all of the first's)."""
    dirs = _dirs(data_dir)
    folder_weights = [*weights, *[1.0] * (len(dirs) - len(weights))][: len(dirs)]
    by_folder = [train_files(d) for d in dirs]
    files = [f for folder in by_folder for f in folder]
    if not by_folder[0]:
        raise ConfigError(f"no training files under {dirs[0] / 'train'}: give --data-dir")
    for folder, folder_files in zip(dirs, by_folder, strict=True):
        if not folder_files:
            raise ConfigError(f"--data-dir {folder}: no train/*.jsonl(.gz) files there (label writes them)")
    # eval/ and sanity/ are never trained on: the data is decontaminated upstream, and this guard
    # drops any training prompt that still matches one of their prompts (case and punctuation aside).
    held = held_out(dirs)
    battles = load_battles(files, keep_ties=keep_ties, held_out=held)
    for model in (strong, weak):
        if model not in battles.models:
            dropped = f" ({held.dropped} prompts were left out as eval/ or sanity/ prompts)" if held.dropped else ""
            raise ConfigError(f"--strong/--weak: {model!r} is not in the training data{dropped}")
    folder_of_file = np.array([k for k, folder in enumerate(by_folder) for _ in folder])
    battle_folder = folder_of_file[battles.source]
    with embedding_store(settings) as (embedder_name, store):
        embeddings = store.get(battles.prompts)
        if held.dropped:
            logger.warning("left %d training prompts out: they match eval/ or sanity/ prompts", held.dropped)
        logger.info("training on %d battles, %d prompts, %d models", len(battles), len(battles.prompts), len(battles.models))

        def log_epoch(epoch: int, loss: float) -> None:
            logger.info("epoch %d: loss %.4f", epoch + 1, loss)

        calibrated_on = "training prompts"
        if method == "difficulty":
            own = [
                _own_labels(battles.subset(battle_folder == k), store, strong, weak, folder_weights[k], dirs[k])
                for k in range(1, len(dirs))
            ]
            mf, calibration_prompts = _difficulty_weights(by_folder[0], store, strong, weak, held, own)
            calibration = mf.win_rate(store.get(calibration_prompts), strong, weak)
            calibrated_on = f"chat-like prompts of {', '.join(CHAT_TRAFFIC)} and your labels ({len(calibration_prompts)})"
        else:
            counts = np.bincount(battle_folder, minlength=len(dirs)).astype(np.float64)
            share = np.asarray(folder_weights) * counts[0] / np.maximum(counts, 1.0)
            mf = train_mf(
                embeddings, battles.models, battles.prompt, battles.model_a, battles.model_b, battles.p_a, config,
                weight=share[battle_folder].astype(np.float32), on_epoch=log_epoch,
            )
            calibration = mf.win_rate(embeddings, strong, weak)
        training: dict[str, Any] = {
            "data": [f.name for f in files],
            "folders": [{"path": str(d), "weight": w} for d, w in zip(dirs, folder_weights, strict=True)][1:],
            "battles": len(battles),
            "prompts": len(battles.prompts),
            "models": len(battles.models),
            "method": method,
            "config": config.as_dict() if method == "mf" else {"ridge": 10.0, "written_weight": WRITTEN_WEIGHT},
            "keep_ties": keep_ties,
            "eval_prompts_dropped": held.dropped,
            "calibrated_on": calibrated_on,
            "trained": dt.date.today().isoformat(),
        }
        card = ScorerCard(
            name=name,
            version=f"{dt.date.today():%Y%m%d}-seed{config.seed}-{mf.digest()}",
            strong_model=strong,
            weak_model=weak,
            embedder=embedder_name,
            thresholds=thresholds_for_shares(calibration, SHARES),
            training=training,
        )
        export_onnx(mf, card, out)
        if evaluate:
            results = evaluate_scorer(out, store, eval_files(dirs) + sanity_files(dirs))
            training["eval"] = {
                bench: {k: round(v, 4) for k, v in result["scorer"].items()} for bench, result in results.items()
            }
            card = ScorerCard(**{**card.__dict__, "training": training})
            export_onnx(mf, card, out)
        return card


def _own_labels(
    battles: Battles, store: EmbeddingStore, strong: str, weak: str, weight: float, folder: Path
) -> tuple[Source, list[str]]:
    """A folder's battles of the strong/weak pair as a difficulty source: the target is P(strong won).

    ``battles`` is a subset of the whole table, whose model list the caller has checked holds both."""
    from .difficulty import Source

    a, b = np.asarray(battles.model_a), np.asarray(battles.model_b)
    s, w = battles.models.index(strong), battles.models.index(weak)
    forward, backward = (a == s) & (b == w), (a == w) & (b == s)
    keep = forward | backward
    if not keep.any():
        raise ConfigError(f"--data-dir {folder}: no battles of {strong} against {weak} (the --strong/--weak pair)")
    p_strong = np.where(forward, battles.p_a, 1.0 - battles.p_a)[keep]
    prompts = [battles.prompts[i] for i in battles.prompt[keep]]
    return Source(f"your labels ({folder.name})", store.get(prompts), p_strong.astype(np.float64), weight), prompts


# Real user prompts (OpenAssistant, Vicuna-80, self-instruct): what chat traffic looks like.
# The difficulty scorer is standardised and calibrated on them, so "a 50% strong share"
# means half of chat-like traffic, not half of a benchmark.
CHAT_TRAFFIC = ("qlora_oa_battles", "qlora_vicuna80_battles", "tulu1_human_battles")
WRITTEN_WEIGHT = 2.0  # the task-type labels against all the benchmark difficulty labels (model card)


def chat_prompts(files: list[Path], held: HeldOut) -> list[str]:
    """The prompts of the chat-traffic files among ``files`` (held-out prompts left out)."""
    prompts = (row["prompt"] for f in files if f.name.split(".")[0] in CHAT_TRAFFIC for row in read_jsonl(f))
    return [p for p in dict.fromkeys(prompts) if p not in held]


def _difficulty_weights(
    files: list[Path], store: EmbeddingStore, strong: str, weak: str, held: HeldOut,
    own: Sequence[tuple[Source, list[str]]] = (),
) -> tuple[MFWeights, list[str]]:
    """The difficulty scorer (difficulty.py) as a rank-1 MF, and the prompts it is calibrated on.

    Its score is a ranking: the sigmoid of the need for the strong model, standardised on
    chat-like prompts (a typical one scores 0.5), so use it with strong-call shares and
    calibration rather than absolute thresholds. ``own``: sources from your labels, each
    weighing against the benchmark labels as its folder's weight says."""
    from .difficulty import Source, as_mf, fit_need
    from .written import written_prompts

    prompts, accuracy = mean_correctness(files, skip=held)
    if not prompts and not own:
        raise ConfigError("--method difficulty needs correctness (score) files in the training data, or your labels")
    written, need = written_prompts()
    sources = [Source("benchmark difficulty", store.get(prompts), 1.0 - accuracy)] if prompts else []
    sources += [source for source, _ in own]
    sources.append(Source("task type (written)", store.get(written), np.asarray(need), WRITTEN_WEIGHT))
    u, c = fit_need(sources)
    calibration = chat_prompts(files, held) + [p for _, own_prompts in own for p in own_prompts]
    calibration = calibration or prompts
    projected = store.get(calibration) @ u + c
    scale = 1.0 / (float(np.std(projected)) or 1.0)
    # as_mf scores -a (u'.e + c') + b: u' = -u and c' = -c turn it into a (need - mean) / std.
    return as_mf(-u, -c, a=scale, b=-scale * float(np.mean(projected)), strong=strong, weak=weak), calibration


def _scorer(path: Path) -> OnnxScorer:
    return OnnxScorer(path.stem, path)


def calibrate(
    settings: RouterSettings, scorer_path: Path, prompts_path: Path, out: Path, extra_share: float | None = None
) -> tuple[dict[str, float], int]:
    """Write the scorer with thresholds that make the shares hold on the given prompts (every 5%, and
    ``extra_share``) to ``out``; the thresholds and how many prompts they come from."""
    scorer = _scorer(scorer_path)
    prompts = read_prompts([prompts_path], unique=False)
    if len(prompts) < 20:
        raise ConfigError(f"--prompts: {len(prompts)} prompts is too few to calibrate; give at least 20")
    with embedding_store(settings) as (_, store):
        scores = scorer.model_scores_sync(store.get(prompts))
    win_rate = sigmoid(scores[:, scorer.strong_index] - scores[:, scorer.weak_index])
    shares = SHARES if extra_share is None else np.unique(np.append(SHARES, round(extra_share, 2)))
    thresholds = thresholds_for_shares(win_rate, shares)
    model = onnx.load(str(scorer_path))
    props = {p.key: p.value for p in model.metadata_props}
    props["scorer.thresholds"] = json.dumps(thresholds, sort_keys=True)
    training = json.loads(props.get("scorer.training", "{}"))
    training["calibrated_on"] = f"{prompts_path.name} ({len(prompts)} prompts)"
    props["scorer.training"] = json.dumps(training, sort_keys=True)
    onnx.helper.set_model_props(model, props)
    onnx.save_model(model, str(out))
    return thresholds, len(prompts)


def evaluate(
    settings: RouterSettings, scorer_path: Path, files: Iterable[Path], *, plot: Path | None
) -> dict[str, dict[str, Any]]:
    """Metrics per file (battle files: APGR, CPT; sanity files: AUC, weak share at 50%), and a PNG."""
    with embedding_store(settings) as (_, store):
        results = evaluate_scorer(scorer_path, store, files)
    if plot is not None and results:
        plot_results(results, plot)
    for result in results.values():
        result.pop("curve", None)
        result.pop("scores", None)
    return results


def train_task_detector(
    settings: RouterSettings, *, data_dir: DataDirs, clients_dir: Path, out: Path, seed: int = 0, evaluate: bool = True,
) -> dict[str, Any]:
    """Train the background-task detector on the embedder configured (training/tasks.py), export it to ``out``,
    and return its figures: training recall, the held-out clients' recall, eval/ and sanity/ prompts taken."""
    from ..adapters.task_detector import task_view
    from . import tasks
    from .task_templates import TEMPLATES

    keep = held_out(data_dir)
    prompts = [row["prompt"] for path in train_files(data_dir) for row in read_jsonl(path)
               if isinstance(row.get("prompt"), str) and row["prompt"].strip() and keep.keep(row["prompt"])]
    prompts = list(dict.fromkeys(prompts))
    systems = tasks.recorded_systems(clients_dir) if clients_dir.is_dir() else []
    train, held = tasks.build_examples(prompts, systems, seed=seed)
    with embedding_store(settings) as (name, store):
        x = tasks.features([e.view for e in train], store)
        y = np.array([e.label for e in train])
        fitted = tasks.fit_detector(x, y)
        x_held = tasks.features([e.view for e in held], store)
        eval_prompts = [row["prompt"] for path in eval_files(data_dir) + sanity_files(data_dir) for row in read_jsonl(path)]
        x_eval = tasks.features([task_view(p) for p in eval_prompts], store) if evaluate else x_held[:0]
    figures = tasks.report(fitted, x, y, held, x_held, eval_prompts if evaluate else [], x_eval)
    training = {**figures.as_dict(), "seed": seed, "templates": len(TEMPLATES), "user_prompts": len(prompts),
                "recorded_systems": len(systems)}
    tasks.export_detector(fitted, out, embedder=name, dim=fitted.parts.shape[0], version=f"tasks-{dt.date.today():%Y%m%d}-seed{seed}", training=training)
    return {**training, "threshold": fitted.threshold, "taken_examples": figures.eval_taken_examples}
