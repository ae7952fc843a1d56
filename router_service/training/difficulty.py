"""A difficulty scorer in the MF file format: how much this prompt needs the strong model.

One weighted ridge regression (closed form) on the embedding, over sources that each say
it differently, every target standardised within its source:
- benchmark difficulty: 1 - the mean correctness of every model that answered the prompt
  (the correctness files);
- task type: the prompts written for this project, 0 where a small model is enough and 1
  where the strong one is needed (training/written.py).
The prediction, standardised on chat-like prompts, is exported as a rank-1 MF (two models,
P^ = +1 / -1, a bias), so the router, thresholds and calibration treat it like any scorer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..mf import MFWeights, sigmoid

__all__ = ["Source", "as_mf", "fit_difficulty", "fit_link", "fit_need"]


def fit_difficulty(embeddings: np.ndarray, accuracy: np.ndarray, ridge: float = 10.0) -> tuple[np.ndarray, float]:
    """u, c of d(e) = u.e + c, by ridge regression (closed form)."""
    mean = float(accuracy.mean())
    u = np.linalg.solve(embeddings.T @ embeddings + ridge * np.eye(embeddings.shape[1]), embeddings.T @ (accuracy - mean))
    return u.astype(np.float32), mean


@dataclass(frozen=True)
class Source:
    """One kind of label: embeddings, a need-for-strong target (higher: needs it more), and a relative weight."""

    name: str
    embeddings: np.ndarray
    target: np.ndarray
    weight: float = 1.0


def fit_need(sources: list[Source], ridge: float = 10.0) -> tuple[np.ndarray, float]:
    """u, c of need(e) = u.e + c: ridge regression of each source's standardised target.

    A source's weight is its share against the first source, whatever its size: 305 written
    prompts at weight 2 count twice as much as 21,000 benchmark prompts at weight 1."""
    base = len(sources[0].target)
    x = np.vstack([s.embeddings for s in sources]).astype(np.float64)
    x = np.hstack([x, np.ones((len(x), 1))])
    y = np.concatenate([(s.target - s.target.mean()) / (s.target.std() or 1.0) for s in sources])
    w = np.concatenate([np.full(len(s.target), s.weight * base / len(s.target)) for s in sources])
    coef = np.linalg.solve(x.T @ (x * w[:, None]) + ridge * np.eye(x.shape[1]), (x * w[:, None]).T @ y)
    return coef[:-1].astype(np.float32), float(coef[-1])


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
