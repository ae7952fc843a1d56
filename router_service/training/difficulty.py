"""A difficulty scorer in the MF file format: how likely the weak model is to fail this prompt.

Two stages, both closed-form:
1. ridge regression of prompt difficulty (the mean correctness of every model that
   answered the prompt, from the correctness files) on the embedding: d(e) = u.e + c;
2. a logistic link fitted on the battles between the scorer's strong and weak
   models: P(strong beats weak | e) = sigmoid(-a d(e) + b).
The result is exported as a rank-1 MF (two models, P^ = +1 / -1, a bias), so the
router, thresholds and calibration treat it like any scorer.
"""

from __future__ import annotations

import numpy as np

from ..mf import MFWeights, sigmoid

__all__ = ["fit_difficulty", "fit_link"]


def fit_difficulty(embeddings: np.ndarray, accuracy: np.ndarray, ridge: float = 10.0) -> tuple[np.ndarray, float]:
    """u, c of d(e) = u.e + c, by ridge regression (closed form)."""
    mean = float(accuracy.mean())
    u = np.linalg.solve(embeddings.T @ embeddings + ridge * np.eye(embeddings.shape[1]), embeddings.T @ (accuracy - mean))
    return u.astype(np.float32), mean


def fit_link(difficulty: np.ndarray, p_strong: np.ndarray, steps: int = 50) -> tuple[float, float]:
    """a, b of P(strong wins) = sigmoid(-a d + b), by Newton's method on soft labels."""
    x = np.stack([-difficulty, np.ones_like(difficulty)], axis=1).astype(np.float64)
    theta = np.zeros(2)
    for _ in range(steps):
        p = sigmoid(x @ theta)
        grad = x.T @ (p - p_strong)
        hessian = (x * (p * (1 - p))[:, None]).T @ x + 1e-6 * np.eye(2)
        theta -= np.linalg.solve(hessian, grad)
    return float(theta[0]), float(theta[1])


def as_mf(u: np.ndarray, c: float, a: float, b: float, strong: str, weak: str) -> MFWeights:
    """s_strong - s_weak = -a (u.e + c) + b, written in MF form."""
    return MFWeights(
        models=(strong, weak),
        P=np.array([[1.0], [-1.0]], np.float32),
        W=(-a / 2 * u)[None, :].astype(np.float32),
        w=np.ones(1, np.float32),
        bias=np.array([b - a * c, 0.0], np.float32),
    )
