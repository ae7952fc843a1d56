"""Import parity: a checkpoint saved by RouteLLM's own MFModel, imported here, scores as RouteLLM does.

    python -m bench.versus_routellm.import_parity [--prompts 200]

1. In the throwaway RouteLLM virtualenv (run.py's), ``routellm_export.py`` builds RouteLLM's
   MFModel with random weights, saves it with its own ``save_pretrained`` (the layout of
   its published checkpoints) and computes ``pred_win_rate`` for the default pair and a
   second pair on fixed 1536-d unit embeddings, its OpenAI client answered in-process.
2. Here, ``router-service import-routellm`` turns that folder into a scorer file, and
   onnxruntime scores the same embeddings. Prints the largest difference (must be < 1e-6).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench.versus_routellm.run import HERE, ensure_venv
from router_service.adapters.scorer import OnnxScorer
from router_service.routellm_import import ROUTELLM_MODEL_IDS, import_routellm

PAIRS = (("gpt-4-1106-preview", "mixtral-8x7b-instruct-v0.1"), ("claude-2.1", "llama-2-7b-chat"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=200)
    args = parser.parse_args()
    python = ensure_venv()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        embeddings = np.random.default_rng(0).normal(size=(args.prompts, 1536)).astype(np.float32)
        embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
        np.save(tmp / "embeddings.npy", embeddings)
        subprocess.run(
            [python, str(HERE / "routellm_export.py"), str(tmp / "ckpt"), str(tmp / "embeddings.npy"),
             str(tmp / "theirs.json"), json.dumps(PAIRS)],
            # RouteLLM builds an OpenAI client at import and refuses to start without a key (its trap);
            # the client is replaced before any call, so this one is never sent anywhere.
            check=True, env={**os.environ, "OPENAI_API_KEY": "sk-unused-by-this-check"},
        )
        theirs = json.loads((tmp / "theirs.json").read_text())
        worst = 0.0
        for strong, weak in PAIRS:
            import_routellm(tmp / "ckpt", tmp / "mf.onnx", strong=strong, weak=weak)
            scores = OnnxScorer("mf", tmp / "mf.onnx").model_scores_sync(embeddings).astype(np.float64)
            a, b = ROUTELLM_MODEL_IDS.index(strong), ROUTELLM_MODEL_IDS.index(weak)
            ours = 1.0 / (1.0 + np.exp(-(scores[:, a] - scores[:, b])))
            diff = float(np.abs(ours - np.asarray(theirs[f"{strong}|{weak}"])).max())
            spread = float(np.std(theirs[f"{strong}|{weak}"]))
            print(f"{strong} vs {weak}: max |ours - RouteLLM's pred_win_rate| over {args.prompts} prompts = {diff:.2e} "
                  f"(win-rate std {spread:.3f})")
            worst = max(worst, diff)
    print("PASS" if worst < 1e-6 else "FAIL", f"(worst {worst:.2e}, bound 1e-6)")
    sys.exit(0 if worst < 1e-6 else 1)


if __name__ == "__main__":
    main()
