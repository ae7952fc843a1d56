"""``router-service train | calibrate | eval``: the scorer pipeline's commands."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from ..config import BUNDLED_SCORERS, BUNDLED_STATIC_EMBEDDER, RouterSettings, ScorerSettings
from ..errors import ConfigError
from . import pipeline
from .evaluation import summary

__all__ = ["add_commands", "run"]

logger = logging.getLogger(__name__)


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    config_help = "TOML config file: the embedder used for training is the configured one"

    train = sub.add_parser(
        "train", help="train a scorer (difficulty by default, or the MF) on ../shared/data/train and export ONNX"
    )
    train.add_argument("--config", type=Path, help=config_help)
    train.add_argument(
        "--data-dir", action="append", default=[], metavar="DIR[:WEIGHT]",
        help="routing data folder with train/ (and eval/, sanity/, held out); repeatable: the first is the base "
        "(default ../shared/data), each further one, e.g. the output of label, weighs WEIGHT times the first's "
        "labels in all (default 1)",
    )
    train.add_argument(
        "--out", type=Path, help="scorer file to write (default: the bundled one of this method and embedder backend)"
    )
    train.add_argument("--name", help="scorer name stored in the file (default: the method)")
    train.add_argument(
        "--method", choices=("difficulty", "mf"), default="difficulty",
        help="difficulty (the default scorer): ridge regression of prompt difficulty, exported as a rank-1 MF "
        "(see router_service/training/difficulty.py); mf: RouteLLM's matrix factorisation",
    )
    train.add_argument("--strong", default=pipeline.REFERENCE_STRONG, help="reference strong model of the scorer")
    train.add_argument("--weak", default=pipeline.REFERENCE_WEAK, help="reference weak model of the scorer")
    train.add_argument("--dim", type=int, default=128, help="MF dimension")
    train.add_argument("--epochs", type=int, default=12)
    train.add_argument("--lr", type=float, default=3e-3)
    train.add_argument("--weight-decay", type=float, default=1e-5)
    train.add_argument("--noise", type=float, default=0.0, help="Gaussian noise on embeddings while training")
    train.add_argument("--no-ties", action="store_true", help="drop tied battles instead of training them as p=0.5")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--no-eval", action="store_true", help="skip the eval/ metrics stored in the model card")

    labeller = sub.add_parser(
        "label",
        help="label your own prompts (e.g. the gateway's capture files): both models answer through the gateway, "
        "your judge model compares the answers in both orders; writes battles for train/eval (resumable)",
    )
    labeller.add_argument(
        "--prompts", type=Path, action="append", required=True,
        help="a file (JSON lines with 'prompt', or one prompt a line) or a folder of capture files (repeatable)",
    )
    labeller.add_argument("--strong", required=True, help="the strong model's name at the gateway, e.g. llama3.1:70b")
    labeller.add_argument("--weak", required=True, help="the weak model's name at the gateway, e.g. llama3.1:8b")
    labeller.add_argument("--judge", required=True, help="the judge model's name at the gateway (your strongest)")
    labeller.add_argument("--gateway", required=True, help="the gateway's URL, e.g. http://localhost:8000")
    labeller.add_argument("--out", type=Path, default=Path("labels"), help="output folder (default: labels)")
    labeller.add_argument("--api-key-env", help="name of the env variable holding a gateway API key, if it needs one")
    labeller.add_argument("--concurrency", type=int, default=4, help="prompts labelled at once (default 4)")
    labeller.add_argument("--eval-share", type=float, default=0.2, help="share of prompts kept for eval/ (default 0.2)")
    labeller.add_argument("--max-tokens", type=int, default=1024, help="max_tokens of each answer and verdict")
    labeller.add_argument("--timeout", type=float, default=300.0, help="seconds one answer may take (default 300)")
    labeller.add_argument("--limit", type=int, help="label at most this many new prompts this run")
    labeller.add_argument("--retry-unparsed", action="store_true", help="ask the judge again where its verdict was unparseable")

    calibrate = sub.add_parser("calibrate", help="set a scorer's thresholds for target strong-call shares on your prompts")
    calibrate.add_argument("--config", type=Path, help=config_help)
    calibrate.add_argument("--prompts", type=Path, required=True, help="JSON lines with a 'prompt' field, one prompt a line, or the gateway's capture folder")
    calibrate.add_argument("--scorer", type=Path, help="scorer file to calibrate (default: the configured default scorer)")
    calibrate.add_argument(
        "--out", type=Path, help="where to write the calibrated scorer (default: SCORER-calibrated.onnx in the current folder)"
    )
    calibrate.add_argument("--in-place", action="store_true", help="rewrite the scorer file itself instead")
    calibrate.add_argument(
        "--strong-model-pct", type=float, metavar="P",
        help="RouteLLM's wording: also print the threshold that sends this share (0..1) of the prompts to the "
        "strong model, as a router-mf-<threshold> model name",
    )

    distill = sub.add_parser(
        "distill-static",
        help="distill the static embedder from MiniLM (model2vec; needs torch: pip install -e '.[distill]')",
    )
    distill.add_argument("--out", type=Path, default=BUNDLED_STATIC_EMBEDDER, help="model folder to write")
    distill.add_argument("--dims", type=int, default=256, help="PCA dimensions")

    tasks = sub.add_parser(
        "train-tasks",
        help="train the background-task detector on clients' task templates against ../shared/data/train's user "
        "prompts, report on the held-out clients and on every eval/ and sanity/ prompt, and export ONNX",
    )
    tasks.add_argument("--config", type=Path, help=config_help)
    tasks.add_argument("--data-dir", type=Path, help="routing data folder with train/, eval/, sanity/ (default ../shared/data)")
    tasks.add_argument(
        "--clients-dir", type=Path, help="recorded client requests whose system prompts join the negatives "
        "(default ../shared/clients beside the data folder)",
    )
    tasks.add_argument("--out", type=Path, help="detector file to write (default: the bundled one of the embedder backend)")
    tasks.add_argument("--seed", type=int, default=0)

    evaluate = sub.add_parser(
        "eval",
        help="APGR / CPT(50%%) / CPT(80%%) on eval/, ROC-AUC and weak share at 50%% on sanity/, beside a random "
        "router, and a PNG plot",
    )
    evaluate.add_argument("--config", type=Path, help=config_help)
    evaluate.add_argument(
        "--data", type=Path, action="append", help="eval or sanity file (repeatable; default: every file in eval/ and sanity/)"
    )
    evaluate.add_argument(
        "--data-dir", type=Path, action="append", default=[],
        help="evaluate on eval/ and sanity/ of this folder (repeatable; default ../shared/data), e.g. label's output",
    )
    evaluate.add_argument("--scorer", type=Path, help="scorer file to evaluate (default: the configured default scorer)")
    evaluate.add_argument("--plot", type=Path, default=Path("eval-routing.png"), help="PNG to write")
    evaluate.add_argument("--json", action="store_true", help="end with one JSON line: mean apgr, cpt50, cpt80, and every file under benchmarks")


def run(args: argparse.Namespace, settings: RouterSettings) -> int:
    if args.command == "distill-static":
        _distill_static(args.out, args.dims)
        return 0
    try:
        import tqdm  # noqa: F401
    except ImportError:
        raise ConfigError("label, train, calibrate and eval need the training extras: pip install -e '.[train]'") from None
    if args.command in ("calibrate", "eval") and args.scorer is None:  # the scorer the router would use
        args.scorer = settings.scorers[0].resolve_path(settings.embedder.backend)
    if args.command == "label":
        _label(args)
    elif args.command == "train":
        _train(args, settings)
    elif args.command == "calibrate":
        _calibrate(args, settings)
    elif args.command == "train-tasks":
        _train_tasks(args, settings)
    else:
        _evaluate(args, settings)
    return 0


def _train_tasks(args: argparse.Namespace, settings: RouterSettings) -> None:
    from .data import default_data_dir

    data_dir = args.data_dir or default_data_dir()
    clients = args.clients_dir or data_dir.parent / "clients"
    out = args.out or settings.routing.detector_path(settings.embedder.backend)
    started = time.perf_counter()
    figures = pipeline.train_task_detector(settings, data_dir=data_dir, clients_dir=clients, out=out, seed=args.seed)
    print(json.dumps(figures, indent=1))
    print(f"wrote {out} in {time.perf_counter() - started:.0f} s: held-out clients' tasks taken "
          f"{figures['held_out_recall']:.1%}, eval/sanity prompts taken {figures['eval_sanity_taken']} of "
          f"{figures['eval_sanity_prompts']}")


def _train(args: argparse.Namespace, settings: RouterSettings) -> None:
    from .mf_train import TrainConfig

    started = time.perf_counter()
    if args.out is None:
        if args.method not in BUNDLED_SCORERS or settings.embedder.backend not in BUNDLED_SCORERS[args.method]:
            raise ConfigError(f"train --method {args.method} on the {settings.embedder.backend} embedder: give --out")
        args.out = ScorerSettings(name=args.method).resolve_path(settings.embedder.backend)
    config = TrainConfig(
        dim=args.dim, epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay, noise=args.noise, seed=args.seed
    )
    folders = [_folder_and_weight(item) for item in args.data_dir]
    card = pipeline.train_and_export(
        settings,
        data_dir=[folder for folder, _ in folders] or None,
        weights=[weight for _, weight in folders],
        out=args.out,
        config=config,
        name=args.name or args.method,
        strong=args.strong,
        weak=args.weak,
        keep_ties=not args.no_ties,
        evaluate=not args.no_eval,
        method=args.method,
    )
    print(json.dumps(card.training.get("eval", {}), indent=2))
    print(f"wrote {args.out} in {time.perf_counter() - started:.0f}s")


def _label(args: argparse.Namespace) -> None:
    import asyncio
    import os

    from .data import read_prompts
    from .label import LabelJob, label

    if not 0.0 <= args.eval_share < 1.0:
        raise ConfigError(f"--eval-share {args.eval_share}: give a share in [0, 1)")
    if args.concurrency < 1:
        raise ConfigError("--concurrency must be >= 1")
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise ConfigError(f"--api-key-env names {args.api_key_env}, which is unset or empty")
    prompts = read_prompts(args.prompts)
    if not prompts:
        raise ConfigError(f"--prompts: no prompts in {', '.join(map(str, args.prompts))}")
    job = LabelJob(
        gateway=args.gateway, strong=args.strong, weak=args.weak, judge=args.judge, out=args.out, api_key=api_key,
        concurrency=args.concurrency, eval_share=args.eval_share, max_tokens=args.max_tokens, timeout_s=args.timeout,
        retry_unparsed=args.retry_unparsed, limit=args.limit,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request would drown the progress bar
    counts = asyncio.run(label(job, prompts))
    print(json.dumps({"prompts": len(prompts), **counts, "out": str(args.out)}))
    if counts.get("failed"):
        print(f"{counts['failed']} prompts failed (see {args.out / 'failures.jsonl'}); run the same command again to retry them")


def _folder_and_weight(item: str) -> tuple[Path, float]:
    """DIR or DIR:WEIGHT (a path that itself contains ':' is taken whole unless what follows parses as a number)."""
    folder, sep, weight = item.rpartition(":")
    if sep and folder:
        try:
            value = float(weight)
        except ValueError:
            return Path(item), 1.0
        if not value > 0:
            raise ConfigError(f"--data-dir {item}: the weight must be > 0")
        return Path(folder), value
    return Path(item), 1.0


def _distill_static(out: Path, dims: int) -> None:
    """model2vec's distillation of the MiniLM the local embedder is built from, int8 weights.

    Offline, once: the result is committed (7.6 MB) and served with numpy only."""
    try:
        from model2vec import quantize_model
        from model2vec.distill import distill
    except ImportError:
        raise ConfigError(
            "distill-static needs model2vec's distillation extras (torch, transformers<5.4), best in a "
            "separate venv: pip install -e '.[distill]'"
        ) from None
    from ..adapters.local_embedder import source_model_dir

    model = quantize_model(distill(model_name=str(source_model_dir()), pca_dims=dims), quantize_to="int8")
    model.save_pretrained(str(out))
    # Name the source model, not this machine's path to it; the card is models/README.md.
    config_file = out / "config.json"
    config = json.loads(config_file.read_text())
    config["tokenizer_name"] = "sentence-transformers/all-MiniLM-L6-v2"
    config_file.write_text(json.dumps(config, indent=4) + "\n")
    (out / "README.md").write_text(
        "---\nlicense: apache-2.0\nlibrary_name: model2vec\nbase_model: sentence-transformers/all-MiniLM-L6-v2\n---\n"
        "# static-minilm-m2v\n\nmodel2vec static embedder distilled from all-MiniLM-L6-v2 (Apache-2.0) by\n"
        "`router-service distill-static`. Model card: ../README.md.\n"
    )
    print(f"wrote {out}: {model.embedding.shape[0]} tokens x {model.dim} dims, {model.embedding.dtype}")


STABLE_PROMPTS = 400  # a share estimated from n prompts is within 1.96 * sqrt(0.25 / n): +/-5 points at 400


def _calibrate(args: argparse.Namespace, settings: RouterSettings) -> None:
    pct = args.strong_model_pct
    if pct is not None and not 0.0 < pct < 1.0:
        raise ConfigError(f"--strong-model-pct {pct}: give a share between 0 and 1, e.g. 0.5 for half the calls")
    if args.in_place and args.out is not None:
        raise ConfigError("calibrate: give --out FILE or --in-place, not both")
    out = args.scorer if args.in_place else args.out or Path(f"{args.scorer.stem}-calibrated.onnx")
    thresholds, count = pipeline.calibrate(settings, args.scorer, args.prompts, out, extra_share=pct)
    for share, threshold in thresholds.items():
        print(f"strong share {float(share):4.0%}: threshold {threshold:.5f}")
    print(f"wrote {out} (thresholds from {count} prompts)")
    if count < STABLE_PROMPTS:
        spread = 196 * (0.25 / count) ** 0.5  # the 95% interval of a share estimated from ``count`` prompts, in points
        print(
            f"warning: {count} prompts give each share to within about +/-{spread:.0f} points (95%); "
            f"{STABLE_PROMPTS} give +/-5. Calibrate on more of your traffic before routing by it",
            file=sys.stderr,
        )
    if not args.in_place:
        print(f"to route by it: [[scorers]] path = \"{out}\", or router-service reload --scorer NAME={out}")
    if pct is not None:
        threshold = thresholds[f"{pct:.2f}"]
        print(f"For {pct * 100:g}% strong model calls, threshold = {threshold:.5f} (model name router-mf-{threshold:.5f})")


def _evaluate(args: argparse.Namespace, settings: RouterSettings) -> None:
    dirs = args.data_dir or None
    files = args.data or pipeline.eval_files(dirs) + pipeline.sanity_files(dirs)
    if not files:
        raise ConfigError(f"eval: no eval/ or sanity/ files under {', '.join(map(str, args.data_dir))}")
    results = pipeline.evaluate(settings, args.scorer, files, plot=args.plot)
    if not results:
        raise ConfigError(
            f"eval: none of {', '.join(f.name for f in files)} could be evaluated (the warnings above say why; "
            "own labels need the strong model to win more battles than the weak one for APGR to mean anything)"
        )
    labels = {"scorer": args.scorer.stem, "random": "random"}
    width = max(8, len(args.scorer.stem))
    print(f"{'benchmark':<18} {'router':<{width}} {'APGR':>6} {'CPT(50%)':>9} {'CPT(80%)':>9} {'AUC':>6} {'weak@50%':>9}")
    for name, result in results.items():
        for router, label in labels.items():
            r = result[router]
            if "apgr" in r:
                cells = f"{r['apgr']:6.3f} {r['cpt50']:9.2%} {r['cpt80']:9.2%} {'-':>6} {'-':>9}"
            else:
                cells = f"{'-':>6} {'-':>9} {'-':>9} {r['auc']:6.3f} {r['weak_share_at_50']:9.2%}"
            print(f"{name:<18} {label:<{width}} {cells}")
    print(f"plot: {args.plot}")
    if args.json:
        line: dict[str, Any] = {**summary(results), "benchmarks": results}
        print(json.dumps(line))
