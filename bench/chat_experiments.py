"""Routing quality on chat traffic: which labels teach "a small model is enough here".

    python -m bench.chat_experiments [--backend local|static]

Every router here is one ridge regression on the embedding (training/difficulty.py's
fit_need) over a mix of label sources, each standardised within its source:
- difficulty: 1 - mean correctness of the models in the correctness files (benchmarks);
- chat: how often the bigger model wins a judged battle in the three chat files;
- alpaca: how often AlpacaEval's reference (GPT-4 Turbo) beats the 115 other models;
- written: the prompts written for this project, 0 = small model enough, 1 = strong needed.
Reported on held-out data only: APGR on eval/ and the RouterBench validation split, ROC-AUC
and the share of `weak` prompts routed weak at a 50% share on sanity/. The 50% threshold
is the median score of the chat-like training prompts (the shipped scorer's calibration).
Also tried (see the model card): two heads combined non-linearly (min of task type and
difficulty) and an MLP; both were worse than the linear mix.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.scorer_experiments import validation_set
from router_service.adapters.scorer import OnnxScorer
from router_service.config import BUNDLED_SCORERS, RouterSettings
from router_service.training.data import HeldOut, mean_correctness, read_jsonl
from router_service.training.difficulty import Source, fit_need
from router_service.training.evaluation import eval_battles
from router_service.training.metrics import roc_auc, routing_curve
from router_service.training.pipeline import (
    CHAT_TRAFFIC,
    chat_prompts,
    embedding_store,
    eval_files,
    sanity_files,
    train_files,
)
from router_service.training.written import written_prompts

RESULTS = Path(__file__).resolve().parent / "results"
# Rough capability order of the chat files' models: a battle teaches "the bigger one won".
SIZE = {"gpt-4": 9, "bard": 7, "gpt-3.5-turbo": 7, "guanaco-65b": 5, "tulu-65b": 5, "tulu-human-only-65b": 4,
        "guanaco-33b": 4, "vicuna-13b": 3, "guanaco-13b": 3, "guanaco-7b": 1, "tulu-7b": 1}
MIXES: list[dict[str, float]] = [
    {"difficulty": 1}, {"chat": 1}, {"alpaca": 1}, {"written": 1},
    {"difficulty": 1, "chat": 1}, {"difficulty": 1, "written": 1}, {"difficulty": 1, "written": 2},
    {"difficulty": 1, "written": 4}, {"difficulty": 1, "written": 8}, {"difficulty": 1, "written": 2, "chat": 0.5},
    {"difficulty": 1, "chat": 1, "alpaca": 1, "written": 1},
]


def per_prompt_mean(pairs: list[tuple[str, float]], held: HeldOut) -> tuple[list[str], np.ndarray]:
    by_prompt: dict[str, list[float]] = defaultdict(list)
    for prompt, value in pairs:
        if prompt not in held:
            by_prompt[prompt].append(value)
    return list(by_prompt), np.array([np.mean(v) for v in by_prompt.values()])


def label_sources(files: dict[str, Path], held: HeldOut) -> dict[str, tuple[list[str], np.ndarray]]:
    correctness = [files[n] for n in files if n.endswith("_scores")]
    prompts, accuracy = mean_correctness(correctness, skip=held)
    battles = []
    for name in CHAT_TRAFFIC:
        for row in read_jsonl(files[name]):
            a, b = row["model_a"], row["model_b"]
            if a in SIZE and b in SIZE and SIZE[a] != SIZE[b]:
                battles.append((row["prompt"], row["p_a"] if SIZE[a] > SIZE[b] else 1 - row["p_a"]))
    reference = [(row["prompt"], row["p_a"]) for row in read_jsonl(files["alpaca_eval_direct"])]
    written, need = written_prompts()
    return {
        "difficulty": (prompts, 1.0 - accuracy),
        "chat": per_prompt_mean(battles, held),
        "alpaca": per_prompt_mean(reference, held),
        "written": (written, np.asarray(need)),
    }


def linear(u: np.ndarray, c: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda x: np.asarray(x @ u + c)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("local", "static"), default="local")
    args = parser.parse_args()
    files = {p.name.split(".")[0]: p for p in train_files(None)}
    held_sets = {p.name.split(".")[0]: eval_battles(p)[:2] for p in eval_files(None)}
    held_sets["validation (RouterBench test)"] = validation_set()
    sanity = list(read_jsonl(sanity_files(None)[0]))
    held = HeldOut([p for prompts, _ in held_sets.values() for p in prompts] + [r["prompt"] for r in sanity])
    sources = label_sources(files, held)
    calibration = chat_prompts(list(files.values()), held)

    with embedding_store(RouterSettings(embedder={"backend": args.backend})) as (embedder, store):
        vectors = {name: store.get(prompts, progress=False) for name, (prompts, _) in sources.items()}
        held_vectors = {name: store.get(prompts, progress=False) for name, (prompts, _) in held_sets.items()}
        sanity_vectors = store.get([r["prompt"] for r in sanity], progress=False)
        calibration_vectors = store.get(calibration, progress=False)
    expect_strong = np.array([r["expect"] == "strong" for r in sanity])

    def row(label: str, score: Callable[[np.ndarray], np.ndarray]) -> str:
        cells = [f"{routing_curve(score(held_vectors[n]), gain).apgr:.3f}" for n, (_, gain) in held_sets.items()]
        on_sanity = score(sanity_vectors)
        threshold = np.quantile(score(calibration_vectors), 0.5)
        cells += [f"{roc_auc(on_sanity, expect_strong):.3f}", f"{np.mean(on_sanity[~expect_strong] < threshold):.0%}"]
        return f"| {label} | " + " | ".join(cells) + " |"

    lines = [
        f"Embedder: {embedder}. Sources: " + ", ".join(f"{k} {len(v[0])} prompts" for k, v in sources.items()) + ".",
        "",
        "| labels (weight) | " + " | ".join(held_sets) + " | sanity AUC | sanity weak at 50% |",
        "|---|" + "---|" * (len(held_sets) + 2),
    ]
    shipped = OnnxScorer("difficulty", BUNDLED_SCORERS["difficulty"][args.backend])

    def shipped_score(x: np.ndarray) -> np.ndarray:
        scores = shipped.model_scores_sync(x.astype(np.float32))
        return scores[:, shipped.strong_index] - scores[:, shipped.weak_index]

    lines.append(row("shipped `difficulty` scorer", shipped_score))
    print(lines[-1], flush=True)
    for mix in MIXES:
        u, c = fit_need([Source(k, vectors[k], sources[k][1], w) for k, w in mix.items()])
        lines.append(row(", ".join(f"{k} ({w:g})" for k, w in mix.items()), linear(u, c)))
        print(lines[-1], flush=True)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"chat_experiments-{args.backend}.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
