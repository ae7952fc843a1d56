"""Scorer experiments: MF variants against simple baselines, on held-out data only.

    python -m bench.scorer_experiments [--quick] [--only TEXT ...]

Every router is scored by APGR (the RouteLLM paper's metric) for the pair
gpt-4-1106-preview vs Mixtral-8x7B on:
- validation: RouterBench's *test* split for exactly that pair (ARC, Winogrande,
  MBPP correctness), held out of training here, so choices can be made on it;
- eval: ../shared/data/eval (MMLU, GSM8K), never trained on, reported only.
Embeddings come from the router's local embedder through the on-disk cache.
Writes bench/results/scorer_experiments.md.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from router_service.config import RouterSettings
from router_service.training.data import Battles, load_battles, mean_correctness, read_jsonl
from router_service.training.difficulty import fit_difficulty
from router_service.training.embeddings import EmbeddingStore
from router_service.training.evaluation import eval_battles
from router_service.training.metrics import routing_curve
from router_service.training.mf_train import TrainConfig, train_mf
from router_service.training.pipeline import (
    REFERENCE_STRONG,
    REFERENCE_WEAK,
    embedding_store,
    eval_files,
    train_files,
)

RESULTS = Path(__file__).resolve().parent / "results"
ROUTERBENCH_PAIR = ("gpt-4-1106-preview", "mistralai/mixtral-8x7b-chat")

Scorer = Callable[[np.ndarray, list[str]], np.ndarray]  # (embeddings, prompts) -> P(strong wins)


def validation_set() -> tuple[list[str], np.ndarray]:
    """RouterBench test-split prompts and the pair's gain (+1 / -1 / 0)."""
    path = next(p for p in train_files(None) if p.name.startswith("routerbench"))
    prompts, gain = [], []
    for row in read_jsonl(path):
        strong, weak = (row["scores"].get(m) for m in ROUTERBENCH_PAIR)
        if row["split"].endswith("test") and strong is not None and weak is not None:
            prompts.append(row["prompt"])
            gain.append(float(strong) - float(weak))
    return prompts, np.asarray(gain)


def labelled_sets() -> dict[str, tuple[list[str], np.ndarray]]:
    """The held-out sets every experiment reports on: validation, then each eval/ file, with
    the reference pair's gain per prompt."""
    sets = {"validation": validation_set()}
    for path in eval_files(None):
        prompts, gain, _, _ = eval_battles(path)
        sets[path.name.split(".")[0]] = (prompts, gain)
    return sets


def apgr(scores: np.ndarray, gain: np.ndarray) -> float:
    return routing_curve(scores, gain).apgr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs, for a smoke run")
    parser.add_argument("--only", nargs="+", metavar="TEXT", help="run only the routers whose label contains TEXT")
    args = parser.parse_args()
    epochs = 3 if args.quick else 12

    with ExitStack() as resources:  # the embedder stays open for the whole run
        _, store = resources.enter_context(embedding_store(RouterSettings()))
        run(args, epochs, store)


def run(args: argparse.Namespace, epochs: int, store: EmbeddingStore) -> None:
    labelled = labelled_sets()
    held_out = set(labelled["validation"][0])
    sets = {name: (store.get(prompts, progress=False), prompts, gain) for name, (prompts, gain) in labelled.items()}

    files = {p.name.split(".")[0]: p for p in train_files(None)}

    def battles(names: list[str], keep_ties: bool = True, anchored: bool = False) -> Battles:
        table = load_battles([files[n] for n in names], keep_ties=keep_ties, anchored=anchored)
        keep = np.array([table.prompts[i] not in held_out for i in table.prompt])
        return table.subset(keep)

    def mf(names: list[str], **config: float) -> Scorer:
        table = battles(
            names, keep_ties=bool(config.pop("keep_ties", True)), anchored=bool(config.pop("anchored", False))
        )
        weight = None
        if config.pop("balance_sources", False):  # each source file weighs the same in the loss
            counts = np.bincount(table.source, minlength=len(table.sources)).astype(np.float32)
            weight = (len(table) / (np.count_nonzero(counts) * counts))[table.source]
        embeddings = store.get(table.prompts, progress=False)
        weights = train_mf(
            embeddings, table.models, table.prompt, table.model_a, table.model_b, table.p_a,
            TrainConfig(**{"epochs": epochs, **config}),  # type: ignore[arg-type]
            weight=weight,
        )
        return lambda e, _p: weights.win_rate(e, REFERENCE_STRONG, REFERENCE_WEAK)

    def difficulty(kind: str) -> Scorer:
        """Baselines: predict how many models fail a prompt, from correctness files."""
        names = ("routerbench_subset_scores", "routerdc_model7_scores", "llmrouter_dcrouter_scores")
        prompts, y = mean_correctness([files[n] for n in names], skip=held_out)
        x = store.get(prompts, progress=False)
        if kind == "ridge":
            u, _ = fit_difficulty(x, y)  # the shipped `difficulty` scorer's regression
            return lambda e, _p: -(e @ u)
        return lambda e, _p: -np.stack([y[np.argpartition(-(row @ x.T), 50)[:50]].mean() for row in e])

    rng = np.random.default_rng(0)
    all_files = list(files)
    routers: dict[str, Callable[[], Scorer | str]] = {
        "random (mean of 20 draws)": lambda: "random",
        "MF, all data, dim 128 (the shipped recipe)": lambda: mf(all_files, dim=128),
        "MF, all data, no ties": lambda: mf(all_files, dim=128, keep_ties=False),
        "MF, all data, correctness anchored": lambda: mf(all_files, dim=128, anchored=True),
        "MF, correctness anchored only": lambda: mf(
            ["routerbench_subset_scores", "routerdc_model7_scores", "llmrouter_dcrouter_scores"], dim=128, anchored=True
        ),
        "MF, correctness anchored only, dim 32": lambda: mf(
            ["routerbench_subset_scores", "routerdc_model7_scores", "llmrouter_dcrouter_scores"], dim=32, anchored=True
        ),
        "MF, all data, dim 32": lambda: mf(all_files, dim=32),
        "MF, all data, embedding noise 0.1": lambda: mf(all_files, dim=128, noise=0.1),
        "MF, all data, each source weighted the same": lambda: mf(all_files, dim=128, balance_sources=True),
        "MF, all data, weight decay 1e-3": lambda: mf(all_files, dim=128, weight_decay=1e-3),
        "MF, all data, 24 epochs": lambda: mf(all_files, dim=128, epochs=24 if epochs == 12 else epochs),
        "MF, correctness files only": lambda: mf(
            ["routerbench_subset_scores", "routerdc_model7_scores", "llmrouter_dcrouter_scores"], dim=128
        ),
        "MF, RouterBench + AlpacaEval (pairs with both models)": lambda: mf(
            ["routerbench_subset_scores", "alpaca_eval_direct"], dim=128
        ),
        "baseline: ridge regression of difficulty (the shipped `difficulty` scorer's recipe)": lambda: difficulty("ridge"),
        "baseline: kNN (k=50) difficulty": lambda: difficulty("knn"),
        "heuristic: prompt length (not shipped, see note)": lambda: (lambda _e, p: np.array([len(t) for t in p], float)),
    }
    names = list(sets)
    lines = ["| router | " + " | ".join(names) + " | seconds |", "|---|" + "---|" * (len(names) + 1)]
    for label, make in routers.items():
        if args.only and not any(text in label for text in args.only):
            continue
        started = time.perf_counter()
        scorer: Any = make()
        if scorer == "random":
            cells = [f"{np.mean([apgr(rng.random(len(g)), g) for _ in range(20)]):.3f}" for _, _, g in sets.values()]
        else:
            cells = [f"{apgr(scorer(e, p), g):.3f}" for e, p, g in sets.values()]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {time.perf_counter() - started:.0f} |")
        print(lines[-1], flush=True)
    report = "\n".join(
        ["APGR (higher is better; random = 0.5). Validation prompts are held out of every training set here.", "", *lines]
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scorer_experiments.md").write_text(report + "\n")
    print(report)


if __name__ == "__main__":
    main()
