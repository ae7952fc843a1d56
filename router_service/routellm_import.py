"""Import a RouteLLM matrix-factorisation checkpoint as a scorer file.

RouteLLM's ``MFModel`` (routellm 0.2, ``routers/matrix_factorization/model.py``) is saved
by ``PyTorchModelHubMixin.save_pretrained``: a folder with ``model.safetensors`` holding

    P.weight              [num_models, dim]   model embeddings, L2-normalised in forward
    text_proj.0.weight    [dim, text_dim]     Linear(text_dim, dim, bias=False); absent without use_proj
    classifier.0.weight   [1, dim]            Linear(dim, 1, bias=False)

and ``config.json`` with ``dim``, ``num_models``, ``text_dim``, ``num_classes``, ``use_proj``.
Rows of ``P`` are the models of its ``MODEL_IDS`` (below, same order), and the prompt is
embedded with OpenAI's text-embedding-3-small (1536 dims). The math is exactly ``mf.py``'s:
the imported file scores as RouteLLM's ``pred_win_rate``, so its thresholds mean the same.

Only safetensors is read (no pickle, no torch). A ``pytorch_model.bin`` converts in any
environment with torch: ``python -c "import torch, safetensors.torch as s;
s.save_file(torch.load('pytorch_model.bin'), 'model.safetensors')"``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .errors import ConfigError
from .mf import MFWeights, ScorerCard, export_onnx

__all__ = ["ROUTELLM_EMBEDDER", "ROUTELLM_MODEL_IDS", "import_routellm", "read_routellm_weights"]

# RouteLLM 0.2.0 MODEL_IDS, in id order (row i of P is model i).
ROUTELLM_MODEL_IDS: tuple[str, ...] = (
    "RWKV-4-Raven-14B", "alpaca-13b", "chatglm-6b", "chatglm2-6b", "chatglm3-6b", "claude-1", "claude-2.0",
    "claude-2.1", "claude-instant-1", "codellama-34b-instruct", "deepseek-llm-67b-chat", "dolly-v2-12b",
    "dolphin-2.2.1-mistral-7b", "falcon-180b-chat", "fastchat-t5-3b", "gemini-pro", "gemini-pro-dev-api",
    "gpt-3.5-turbo-0125", "gpt-3.5-turbo-0314", "gpt-3.5-turbo-0613", "gpt-3.5-turbo-1106", "gpt-4-0125-preview",
    "gpt-4-0314", "gpt-4-0613", "gpt-4-1106-preview", "gpt4all-13b-snoozy", "guanaco-33b", "koala-13b", "llama-13b",
    "llama-2-13b-chat", "llama-2-70b-chat", "llama-2-7b-chat", "llama2-70b-steerlm-chat", "mistral-7b-instruct",
    "mistral-7b-instruct-v0.2", "mistral-medium", "mixtral-8x7b-instruct-v0.1", "mpt-30b-chat", "mpt-7b-chat",
    "nous-hermes-2-mixtral-8x7b-dpo", "oasst-pythia-12b", "openchat-3.5", "openchat-3.5-0106",
    "openhermes-2.5-mistral-7b", "palm-2", "pplx-70b-online", "pplx-7b-online", "qwen-14b-chat", "qwen1.5-4b-chat",
    "qwen1.5-72b-chat", "qwen1.5-7b-chat", "solar-10.7b-instruct-v1.0", "stablelm-tuned-alpha-7b",
    "starling-lm-7b-alpha", "stripedhyena-nous-7b", "tulu-2-dpo-70b", "vicuna-13b", "vicuna-33b", "vicuna-7b",
    "wizardlm-13b", "wizardlm-70b", "yi-34b-chat", "zephyr-7b-alpha", "zephyr-7b-beta",
)
# What RouteLLM's MFModel embeds prompts with; the router must be configured to match.
ROUTELLM_EMBEDDER = "openai:text-embedding-3-small"
# MatrixFactorizationRouter's default scoring pair.
ROUTELLM_STRONG, ROUTELLM_WEAK = "gpt-4-1106-preview", "mixtral-8x7b-instruct-v0.1"


def _weights_file(path: Path) -> Path:
    if path.is_dir():
        found = path / "model.safetensors"
        if found.is_file():
            return found
        if (path / "pytorch_model.bin").is_file():
            raise ConfigError(
                f"{path} holds pytorch_model.bin (a pickle, not read here): convert it where torch is installed: "
                "python -c \"import torch, safetensors.torch as s; "
                "s.save_file(torch.load('pytorch_model.bin'), 'model.safetensors')\""
            )
        raise ConfigError(f"{path} has no model.safetensors: give RouteLLM's MF checkpoint folder (save_pretrained)")
    if path.is_file():
        return path
    raw = str(path)
    if raw.count("/") == 1 and not raw.startswith((".", "/", "~")):
        raise ConfigError(
            f"RouteLLM checkpoint {raw}: it looks like a Hugging Face repo id, and nothing is downloaded here: fetch it "
            f"where you can (huggingface-cli download {raw} --local-dir DIR) and give DIR"
        )
    raise ConfigError(f"RouteLLM checkpoint {path} does not exist")


def read_routellm_weights(path: Path) -> MFWeights:
    """The MF weights of a RouteLLM checkpoint (its folder, or its model.safetensors)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    weights_file = _weights_file(path)
    try:
        tensors = load_file(str(weights_file))
    except (SafetensorError, OSError) as exc:
        raise ConfigError(f"{weights_file} is not a readable safetensors file: {exc}") from None
    missing = {"P.weight", "classifier.0.weight"} - set(tensors)
    if missing:
        raise ConfigError(
            f"{weights_file} is not a RouteLLM MF checkpoint: no {sorted(missing)} (it has {sorted(tensors)[:8]})"
        )
    P = tensors["P.weight"].astype(np.float64)
    classifier = tensors["classifier.0.weight"].astype(np.float64)
    if classifier.shape[0] != 1:
        raise ConfigError(f"{weights_file}: classifier.0.weight is {classifier.shape}; RouteLLM's MF has num_classes = 1")
    dim = P.shape[1]
    W = tensors["text_proj.0.weight"].astype(np.float64) if "text_proj.0.weight" in tensors else np.eye(dim)
    if W.shape[0] != dim:
        raise ConfigError(f"{weights_file}: text_proj.0.weight is {W.shape}, P.weight is {P.shape}: dims disagree")
    if P.shape[0] != len(ROUTELLM_MODEL_IDS):
        raise ConfigError(
            f"{weights_file}: P.weight has {P.shape[0]} models; RouteLLM's MODEL_IDS name {len(ROUTELLM_MODEL_IDS)}, "
            "so its rows cannot be named"
        )
    return MFWeights(models=ROUTELLM_MODEL_IDS, P=P, W=W, w=classifier[0])


def import_routellm(
    path: Path, out: Path, *, name: str = "mf", strong: str = ROUTELLM_STRONG, weak: str = ROUTELLM_WEAK
) -> ScorerCard:
    """Write ``out``, a scorer file that scores exactly as the checkpoint at ``path`` does in RouteLLM."""
    weights = read_routellm_weights(path)
    for role, model in (("strong", strong), ("weak", weak)):
        if model not in weights.models:
            raise ConfigError(f"--{role}-model {model!r} is not one of RouteLLM's MODEL_IDS: {', '.join(weights.models)}")
    config = path / "config.json" if path.is_dir() else path.parent / "config.json"
    card = ScorerCard(
        name=name,
        version=f"routellm-{_weights_digest(weights)}",
        strong_model=strong,
        weak_model=weak,
        embedder=ROUTELLM_EMBEDDER,
        training={
            "method": "imported RouteLLM MF checkpoint",
            "source": str(path),
            "routellm_config": json.loads(config.read_text()) if config.is_file() else None,
            "note": "thresholds mean what they mean in RouteLLM: strong when win rate >= threshold",
        },
    )
    export_onnx(weights, card, out)
    return card


def _weights_digest(weights: MFWeights) -> str:
    import hashlib

    digest = hashlib.sha256()
    for array in (weights.P, weights.W, weights.w):
        digest.update(np.ascontiguousarray(array, dtype=np.float32).tobytes())
    return digest.hexdigest()[:12]
