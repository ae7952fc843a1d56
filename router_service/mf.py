"""RouteLLM's matrix-factorisation scorer: the math, and its export to ONNX.

For a prompt embedding e, model m scores

    s_m(e) = w . (P_m / |P_m|  *  W e)

and P(a beats b | prompt) = sigmoid(s_a - s_b)
                          = sigmoid(w . ((P^_a - P^_b) * W e)),

with model vectors P, a text projection W and a linear classifier w, exactly
as RouteLLM's MFModel (``routers/matrix_factorization/model.py``). The ONNX
graph computes every model's score at once, so one run serves any pair.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["MFWeights", "ScorerCard", "export_onnx", "sigmoid"]

FORMAT_VERSION = "1"


def sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-x)))


@dataclass(frozen=True)
class MFWeights:
    models: tuple[str, ...]
    P: np.ndarray  # [models, dim], normalised inside the score
    W: np.ndarray  # [dim, text_dim], torch Linear layout (out, in)
    w: np.ndarray  # [dim]
    bias: np.ndarray | None = None  # [models]; RouteLLM's MF has none (zeros)

    def model_scores(self, embeddings: np.ndarray) -> np.ndarray:
        """The numpy reference: [batch, models] scores s_m(e)."""
        p_hat = self.P / np.linalg.norm(self.P, axis=1, keepdims=True)
        scores = ((embeddings @ self.W.T) * self.w) @ p_hat.T
        return np.asarray(scores if self.bias is None else scores + self.bias)

    def win_rate(self, embeddings: np.ndarray, a: str, b: str) -> np.ndarray:
        scores = self.model_scores(embeddings)
        return sigmoid(scores[:, self.models.index(a)] - scores[:, self.models.index(b)])

    def digest(self) -> str:
        """8 hex digits of the weights: two trainings on one day get different versions."""
        h = hashlib.sha256("\n".join(self.models).encode())
        for array in (self.P, self.W, self.w, self.bias):
            if array is not None:
                h.update(np.ascontiguousarray(array, np.float32).tobytes())
        return h.hexdigest()[:8]


@dataclass(frozen=True)
class ScorerCard:
    """What travels with the weights as ONNX metadata."""

    name: str
    version: str
    strong_model: str
    weak_model: str
    embedder: str  # e.g. "local:all-MiniLM-L6-v2"
    # strong-call share (0..1) -> threshold, calibrated on a reference prompt set
    thresholds: dict[str, float] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)


def export_onnx(weights: MFWeights, card: ScorerCard, out: Path) -> None:
    """Write the scorer: input ``embedding`` [batch, text_dim] -> ``model_scores`` [batch, models]
    and ``win_rate`` [batch] for the card's strong/weak pair."""
    p_hat = (weights.P / np.linalg.norm(weights.P, axis=1, keepdims=True)).astype(np.float32)
    strong = weights.models.index(card.strong_model)
    weak = weights.models.index(card.weak_model)
    text_dim = weights.W.shape[1]
    inits = [
        numpy_helper.from_array(np.ascontiguousarray(weights.W.T, np.float32), "projection"),
        numpy_helper.from_array(weights.w.astype(np.float32), "classifier"),
        numpy_helper.from_array(np.ascontiguousarray(p_hat.T), "model_vectors"),
        numpy_helper.from_array(
            (np.zeros(len(weights.models)) if weights.bias is None else weights.bias).astype(np.float32), "model_bias"
        ),
        numpy_helper.from_array(np.array([strong], np.int64), "strong_index"),
        numpy_helper.from_array(np.array([weak], np.int64), "weak_index"),
    ]
    nodes = [
        helper.make_node("MatMul", ["embedding", "projection"], ["projected"]),
        helper.make_node("Mul", ["projected", "classifier"], ["weighted"]),
        helper.make_node("MatMul", ["weighted", "model_vectors"], ["unbiased_scores"]),
        helper.make_node("Add", ["unbiased_scores", "model_bias"], ["model_scores"]),
        helper.make_node("Gather", ["model_scores", "strong_index"], ["strong_score"], axis=1),
        helper.make_node("Gather", ["model_scores", "weak_index"], ["weak_score"], axis=1),
        helper.make_node("Sub", ["strong_score", "weak_score"], ["margin"]),
        helper.make_node("Sigmoid", ["margin"], ["win_rate_column"]),
        helper.make_node("Squeeze", ["win_rate_column", "column_axis"], ["win_rate"]),
    ]
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "column_axis"))
    graph = helper.make_graph(
        nodes,
        card.name,
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", text_dim])],
        [
            helper.make_tensor_value_info("model_scores", TensorProto.FLOAT, ["batch", len(weights.models)]),
            helper.make_tensor_value_info("win_rate", TensorProto.FLOAT, ["batch"]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="router_service")
    model.ir_version = 8
    helper.set_model_props(
        model,
        {
            "scorer.format": FORMAT_VERSION,
            "scorer.name": card.name,
            "scorer.version": card.version,
            "scorer.models": json.dumps(list(weights.models)),
            "scorer.strong_model": card.strong_model,
            "scorer.weak_model": card.weak_model,
            "scorer.thresholds": json.dumps(card.thresholds, sort_keys=True),
            "scorer.training": json.dumps(card.training, sort_keys=True),
            "embedder.name": card.embedder,
            "embedder.dim": str(text_dim),
        },
    )
    onnx.checker.check_model(model, full_check=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(out))
