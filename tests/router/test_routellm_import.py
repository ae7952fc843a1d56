"""RouteLLM MF checkpoints import as scorer files that score exactly as RouteLLM does.

The checkpoint is written here in RouteLLM's layout (what ``MFModel.save_pretrained``
writes: model.safetensors with its state-dict names, and config.json) with known
weights; the reference is RouteLLM's ``MFModel.forward`` / ``pred_win_rate``, line for
line in numpy (torch is not installed here; the bench checks against RouteLLM itself).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from router_service.__main__ import main
from router_service.adapters.scorer import OnnxScorer
from router_service.errors import Uncalibrated
from router_service.routellm_import import ROUTELLM_MODEL_IDS

STRONG, WEAK = ROUTELLM_MODEL_IDS.index("gpt-4-1106-preview"), ROUTELLM_MODEL_IDS.index("mixtral-8x7b-instruct-v0.1")


def write_checkpoint(folder: Path, seed: int = 7) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    tensors = {
        "P.weight": rng.normal(size=(64, 128)).astype(np.float32),
        "text_proj.0.weight": (rng.normal(size=(128, 1536)) / 4).astype(np.float32),
        "classifier.0.weight": rng.normal(size=(1, 128)).astype(np.float32),
    }
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"dim": 128, "num_classes": 1, "num_models": 64, "text_dim": 1536, "use_proj": True}))
    return tensors


def routellm_win_rate(tensors: dict[str, np.ndarray], embedding: np.ndarray, strong: int, weak: int) -> float:
    """MFModel.forward([strong, weak], prompt) then sigmoid(logits[0] - logits[1]), in float32 as torch runs it."""
    model_embed = tensors["P.weight"][[strong, weak]]
    model_embed = model_embed / np.maximum(np.linalg.norm(model_embed, axis=1, keepdims=True), 1e-12)  # F.normalize
    prompt_embed = tensors["text_proj.0.weight"] @ embedding
    logits = ((model_embed * prompt_embed) @ tensors["classifier.0.weight"].T).squeeze()
    return 1.0 / (1.0 + math.exp(-float(logits[0] - logits[1])))


def test_an_imported_checkpoint_scores_as_routellm_to_1e6(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tensors = write_checkpoint(tmp_path / "mf_gpt4_augmented")
    out = tmp_path / "mf-routellm.onnx"
    assert main(["import-routellm", str(tmp_path / "mf_gpt4_augmented"), "--out", str(out)]) == 0
    assert "[embedder] backend = \"openai\"" in capsys.readouterr().out
    scorer = OnnxScorer("mf", out)
    assert scorer.embedder == "openai:text-embedding-3-small" and scorer.embedding_dim == 1536
    assert scorer.models == ROUTELLM_MODEL_IDS and (scorer.strong_model, scorer.weak_model) == (
        "gpt-4-1106-preview", "mixtral-8x7b-instruct-v0.1")
    embeddings = np.random.default_rng(1).normal(size=(50, 1536)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)  # like OpenAI's unit-length vectors
    scores = scorer.model_scores_sync(embeddings)
    ours = 1.0 / (1.0 + np.exp(-(scores[:, scorer.strong_index] - scores[:, scorer.weak_index]).astype(np.float64)))
    theirs = np.array([routellm_win_rate(tensors, e, STRONG, WEAK) for e in embeddings])
    assert np.abs(ours - theirs).max() < 1e-6
    assert 0.05 < theirs.std()  # the weights discriminate: the comparison is not between constants
    # Another pair of RouteLLM's models, from the same file: every model is scored.
    a, b = ROUTELLM_MODEL_IDS.index("claude-2.1"), ROUTELLM_MODEL_IDS.index("llama-2-7b-chat")
    pair = 1.0 / (1.0 + np.exp(-(scores[:, a] - scores[:, b]).astype(np.float64)))
    np.testing.assert_allclose(pair, [routellm_win_rate(tensors, e, a, b) for e in embeddings], atol=1e-6)
    # Thresholds are RouteLLM's: there is no share calibration until the user calibrates.
    with pytest.raises(Uncalibrated, match="router-service calibrate"):
        scorer.threshold_for_share(0.5)


def test_import_errors_are_one_line_and_say_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["import-routellm", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.onnx")]) == 2
    assert capsys.readouterr().err.strip() == f"router-service: RouteLLM checkpoint {tmp_path / 'nowhere'} does not exist"

    (tmp_path / "torch-only").mkdir()
    (tmp_path / "torch-only" / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    assert main(["import-routellm", str(tmp_path / "torch-only"), "--out", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "safetensors.torch" in err  # how to convert, in one line

    write_checkpoint(tmp_path / "ok")
    assert main(["import-routellm", str(tmp_path / "ok"), "--out", str(tmp_path / "x.onnx"), "--strong-model", "gpt-5"]) == 2
    err = capsys.readouterr().err
    assert "--strong-model 'gpt-5' is not one of RouteLLM's MODEL_IDS" in err and "gpt-4-1106-preview" in err

    save_file({"weight": np.zeros((2, 2), np.float32)}, str(tmp_path / "other.safetensors"))
    assert main(["import-routellm", str(tmp_path / "other.safetensors"), "--out", str(tmp_path / "x.onnx")]) == 2
    assert "is not a RouteLLM MF checkpoint" in capsys.readouterr().err


def test_calibrate_speaks_routellm_s_strong_model_pct(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from router_service.adapters.local_embedder import LocalEmbedder
    from router_service.config import BUNDLED_SCORERS, LocalEmbedderSettings

    prompts = [f"Question {i}: " + ("prove the theorem about primes" if i % 3 else "say hi") + f" #{i * 13}" for i in range(40)]
    (tmp_path / "prompts.txt").write_text("\n".join(prompts))
    out = tmp_path / "calibrated.onnx"
    argv = ["calibrate", "--prompts", str(tmp_path / "prompts.txt"), "--scorer", str(BUNDLED_SCORERS["difficulty"]["local"]),
            "--out", str(out), "--strong-model-pct", "0.3"]
    assert main(argv) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("For 30% strong model calls, threshold = ") and "router-mf-" in line
    threshold = float(line.split("threshold = ")[1].split()[0])
    scorer = OnnxScorer("difficulty", out)
    scores = scorer.model_scores_sync(LocalEmbedder(LocalEmbedderSettings()).embed_sync(prompts))
    win_rate = 1.0 / (1.0 + np.exp(-(scores[:, scorer.strong_index] - scores[:, scorer.weak_index])))
    assert np.mean(win_rate >= threshold - 1e-6) == pytest.approx(0.3, abs=0.03)
    assert scorer.threshold_for_share(0.3) == pytest.approx(threshold, abs=1e-5)
