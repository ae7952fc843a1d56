"""``router-service train | calibrate | eval``: the scorer pipeline's commands."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..config import BUNDLED_SCORER, RouterSettings
from ..errors import ConfigError
from . import pipeline

__all__ = ["add_commands", "run"]

logger = logging.getLogger(__name__)


def add_commands(sub: argparse._SubParsersAction) -> None:
    config_help = "TOML config file: the embedder used for training is the configured one"
    data_help = "routing data folder (default: ../shared/data beside the project)"

    train = sub.add_parser("train", help="train the MF scorer on ../shared/data/train and export ONNX")
    train.add_argument("--config", type=Path, help=config_help)
    train.add_argument("--data-dir", type=Path, default=None, help=data_help)
    train.add_argument("--out", type=Path, default=BUNDLED_SCORER, help="scorer file to write (default: the bundled one)")
    train.add_argument("--name", default="mf", help="scorer name stored in the file")
    train.add_argument(
        "--method", choices=("mf", "difficulty"), default="mf",
        help="mf: RouteLLM's matrix factorisation; difficulty: ridge regression of prompt difficulty, "
        "exported as a rank-1 MF (see router_service/training/difficulty.py)",
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

    calibrate = sub.add_parser("calibrate", help="set a scorer's thresholds for target strong-call shares on your prompts")
    calibrate.add_argument("--config", type=Path, help=config_help)
    calibrate.add_argument("--prompts", type=Path, required=True, help="JSON lines with a 'prompt' field, or one prompt a line")
    calibrate.add_argument("--scorer", type=Path, default=BUNDLED_SCORER, help="scorer file to calibrate")
    calibrate.add_argument("--out", type=Path, help="where to write the calibrated scorer (default: in place)")

    evaluate = sub.add_parser("eval", help="APGR / CPT(50%%) / CPT(80%%) beside a random router, and a PNG plot")
    evaluate.add_argument("--config", type=Path, help=config_help)
    evaluate.add_argument("--data", type=Path, action="append", help="eval file (repeatable; default: every file in eval/)")
    evaluate.add_argument("--data-dir", type=Path, default=None, help=data_help)
    evaluate.add_argument("--scorer", type=Path, default=BUNDLED_SCORER, help="scorer file to evaluate")
    evaluate.add_argument("--plot", type=Path, default=Path("eval-routing.png"), help="PNG to write")
    evaluate.add_argument("--json", action="store_true", help="end with one JSON line: apgr, cpt50, cpt80")


def run(args: argparse.Namespace, settings: RouterSettings) -> int:
    try:
        import tqdm  # noqa: F401
    except ImportError:
        raise ConfigError("train, calibrate and eval need the training extras: pip install -e '.[train]'") from None
    if args.command == "train":
        _train(args, settings)
    elif args.command == "calibrate":
        _calibrate(args, settings)
    else:
        _evaluate(args, settings)
    return 0


def _train(args: argparse.Namespace, settings: RouterSettings) -> None:
    from .mf_train import TrainConfig

    started = time.perf_counter()
    config = TrainConfig(
        dim=args.dim, epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay, noise=args.noise, seed=args.seed
    )
    card = pipeline.train_and_export(
        settings,
        data_dir=args.data_dir,
        out=args.out,
        config=config,
        name=args.name,
        strong=args.strong,
        weak=args.weak,
        keep_ties=not args.no_ties,
        evaluate=not args.no_eval,
        method=args.method,
    )
    print(json.dumps(card.training.get("eval", {}), indent=2))
    print(f"wrote {args.out} in {time.perf_counter() - started:.0f}s")


def _calibrate(args: argparse.Namespace, settings: RouterSettings) -> None:
    thresholds = pipeline.calibrate(settings, args.scorer, args.prompts, args.out or args.scorer)
    for share, threshold in thresholds.items():
        print(f"strong share {float(share):4.0%}: threshold {threshold:.5f}")


def _evaluate(args: argparse.Namespace, settings: RouterSettings) -> None:
    files = args.data or pipeline.eval_files(args.data_dir)
    results = pipeline.evaluate(settings, args.scorer, files, plot=args.plot)
    print(f"{'benchmark':<18} {'router':<8} {'APGR':>6} {'CPT(50%)':>9} {'CPT(80%)':>9}")
    for name, result in results.items():
        for router in ("mf", "random"):
            r = result[router]
            print(f"{name:<18} {router:<8} {r['apgr']:6.3f} {r['cpt50']:9.2%} {r['cpt80']:9.2%}")
    print(f"plot: {args.plot}")
    if args.json:
        summary: dict[str, Any] = (
            dict(next(iter(results.values()))["mf"])
            if len(results) == 1
            else {k: float(np.mean([r["mf"][k] for r in results.values()])) for k in ("apgr", "cpt50", "cpt80")}
        )
        summary["benchmarks"] = results
        print(json.dumps(summary))
