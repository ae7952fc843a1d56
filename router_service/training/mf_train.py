"""Train RouteLLM's MF scorer with numpy: Adam on soft-label cross-entropy.

The model is small (a projection, a classifier, one vector per model) and
its gradients are three lines of algebra, so training needs no deep-learning
framework and runs in seconds per epoch on 2 cores. It is reproducible from
the seed.

    logit = w . ((P^_a - P^_b) * W e),   loss = BCE(sigmoid(logit), p_a)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from ..mf import MFWeights, sigmoid

__all__ = ["TrainConfig", "train_mf"]


@dataclass(frozen=True)
class TrainConfig:
    dim: int = 128
    epochs: int = 20
    batch_size: int = 1024
    lr: float = 3e-3
    weight_decay: float = 1e-5
    noise: float = 0.0  # Gaussian noise on prompt embeddings, as RouteLLM's training
    seed: int = 0

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


class _Adam:
    def __init__(self, params: dict[str, np.ndarray], lr: float, weight_decay: float) -> None:
        self.params, self.lr, self.wd = params, lr, weight_decay
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.t = 0

    def step(self, grads: dict[str, np.ndarray]) -> None:
        self.t += 1
        b1, b2, eps = 0.9, 0.999, 1e-8
        for k, g in grads.items():
            g = g + self.wd * self.params[k]
            self.m[k] = b1 * self.m[k] + (1 - b1) * g
            self.v[k] = b2 * self.v[k] + (1 - b2) * g * g
            m_hat = self.m[k] / (1 - b1**self.t)
            v_hat = self.v[k] / (1 - b2**self.t)
            self.params[k] -= self.lr * m_hat / (np.sqrt(v_hat) + eps)


def _forward_backward(
    params: dict[str, np.ndarray], e: np.ndarray, a: np.ndarray, b: np.ndarray, y: np.ndarray, weight: np.ndarray
) -> tuple[float, dict[str, np.ndarray]]:
    P, W, w = params["P"], params["W"], params["w"]
    norms = np.linalg.norm(P, axis=1, keepdims=True)
    p_hat = P / norms
    x = e @ W.T  # [n, d]
    diff = p_hat[a] - p_hat[b]  # [n, d]
    logit = np.einsum("nd,nd->n", diff * w, x)
    prob = sigmoid(logit)
    eps = 1e-7
    total = weight.sum()
    loss = float(-(weight * (y * np.log(prob + eps) + (1 - y) * np.log(1 - prob + eps))).sum() / total)
    g = (weight * (prob - y) / total)[:, None]  # dL/dlogit
    grad_w = (g * diff * x).sum(axis=0)
    grad_x = g * diff * w
    grad_W = grad_x.T @ e
    grad_u = g * (w * x)  # dL/d(P^_a); minus for P^_b
    grad_phat = np.zeros_like(P)
    np.add.at(grad_phat, a, grad_u)
    np.add.at(grad_phat, b, -grad_u)
    # Through the normalisation P^ = P / |P|.
    grad_P = (grad_phat - p_hat * (grad_phat * p_hat).sum(axis=1, keepdims=True)) / norms
    return loss, {"P": grad_P, "W": grad_W, "w": grad_w}


def train_mf(
    embeddings: np.ndarray,
    models: list[str],
    prompt: np.ndarray,
    model_a: np.ndarray,
    model_b: np.ndarray,
    p_a: np.ndarray,
    config: TrainConfig,
    *,
    weight: np.ndarray | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
) -> MFWeights:
    """Fit P, W, w on battles; ``prompt`` indexes rows of ``embeddings``."""
    rng = np.random.default_rng(config.seed)
    text_dim = embeddings.shape[1]
    params = {
        "P": rng.normal(0, 1, (len(models), config.dim)).astype(np.float32),
        "W": (rng.normal(0, 1, (config.dim, text_dim)) / np.sqrt(text_dim)).astype(np.float32),
        "w": rng.normal(0, 1, config.dim).astype(np.float32) / np.sqrt(config.dim),
    }
    weight = np.ones(len(p_a), np.float32) if weight is None else weight.astype(np.float32)
    adam = _Adam(params, config.lr, config.weight_decay)
    for epoch in range(config.epochs):
        order = rng.permutation(len(p_a))
        losses = []
        for start in range(0, len(order), config.batch_size):
            idx = order[start : start + config.batch_size]
            e = embeddings[prompt[idx]]
            if config.noise:
                e = e + rng.normal(0, config.noise, e.shape).astype(np.float32)
            loss, grads = _forward_backward(params, e, model_a[idx], model_b[idx], p_a[idx], weight[idx])
            adam.step(grads)
            losses.append(loss)
        if on_epoch is not None:
            on_epoch(epoch, float(np.mean(losses)))
    return MFWeights(tuple(models), params["P"].copy(), params["W"].copy(), params["w"].copy())
