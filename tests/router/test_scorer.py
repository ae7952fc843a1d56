"""The MF scorer: ONNX export against the numpy reference, metadata, thresholds, training math."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from router_service.adapters.scorer import OnnxScorer
from router_service.errors import ConfigError
from router_service.mf import MFWeights, ScorerCard, export_onnx, sigmoid
from router_service.training.mf_train import TrainConfig, _forward_backward, train_mf

MODELS = ("strong-a", "weak-b", "mid-c", "other-d")


def random_weights(seed: int = 0, text_dim: int = 384, dim: int = 16) -> MFWeights:
    rng = np.random.default_rng(seed)
    return MFWeights(
        MODELS,
        rng.normal(size=(len(MODELS), dim)).astype(np.float32),
        rng.normal(size=(dim, text_dim)).astype(np.float32) / np.sqrt(text_dim),
        rng.normal(size=dim).astype(np.float32),
    )


def card(**changes: object) -> ScorerCard:
    values: dict[str, object] = dict(
        name="test-mf", version="v-test", strong_model="strong-a", weak_model="weak-b",
        embedder="local:all-MiniLM-L6-v2", thresholds={"0.25": 0.8, "0.50": 0.6, "0.75": 0.3},
        training={"note": "random weights"},
    )
    values.update(changes)
    return ScorerCard(**values)  # type: ignore[arg-type]


@pytest.fixture
def exported(tmp_path: Path) -> tuple[MFWeights, OnnxScorer]:
    weights = random_weights()
    path = tmp_path / "scorer.onnx"
    export_onnx(weights, card(), path)
    return weights, OnnxScorer("test", path)


def unit_rows(n: int, dim: int = 384, seed: int = 1) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_onnx_scores_match_the_numpy_reference(exported: tuple[MFWeights, OnnxScorer]) -> None:
    weights, scorer = exported
    embeddings = unit_rows(64)
    onnx_scores = scorer.model_scores_sync(embeddings)
    np.testing.assert_allclose(onnx_scores, weights.model_scores(embeddings), atol=1e-5)
    # The published formula, written out: sigmoid(w . ((P^_s - P^_w) * W e)).
    p_hat = weights.P / np.linalg.norm(weights.P, axis=1, keepdims=True)
    by_formula = sigmoid(((p_hat[0] - p_hat[1]) * (embeddings @ weights.W.T)) @ weights.w)
    onnx_rate = sigmoid(onnx_scores[:, 0] - onnx_scores[:, 1])
    np.testing.assert_allclose(onnx_rate, by_formula, atol=1e-5)
    np.testing.assert_allclose(weights.win_rate(embeddings, "strong-a", "weak-b"), by_formula, atol=1e-6)


def test_win_rate_output_is_the_default_pair(exported: tuple[MFWeights, OnnxScorer]) -> None:
    weights, scorer = exported
    embeddings = unit_rows(5)
    (rate,) = scorer._session.run(["win_rate"], {"embedding": embeddings})
    assert rate.shape == (5,)
    np.testing.assert_allclose(rate, weights.win_rate(embeddings, "strong-a", "weak-b"), atol=1e-5)


def test_metadata_round_trips(exported: tuple[MFWeights, OnnxScorer]) -> None:
    _, scorer = exported
    assert scorer.models == MODELS
    assert (scorer.strong_model, scorer.weak_model) == ("strong-a", "weak-b")
    assert scorer.embedder == "local:all-MiniLM-L6-v2"
    assert scorer.embedding_dim == 384
    assert scorer.version == "v-test"
    assert scorer.thresholds == {0.25: 0.8, 0.5: 0.6, 0.75: 0.3}
    assert scorer.training == {"note": "random weights"}


def test_threshold_for_share_interpolates_and_pins_the_ends(exported: tuple[MFWeights, OnnxScorer]) -> None:
    _, scorer = exported
    assert scorer.threshold_for_share(0.5) == pytest.approx(0.6)
    assert scorer.threshold_for_share(0.375) == pytest.approx(0.7)
    assert scorer.threshold_for_share(0.0) == 1.0
    assert scorer.threshold_for_share(1.0) == 0.0


def test_a_file_that_is_not_a_scorer_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.onnx"
    with pytest.raises(ConfigError, match="does not exist"):
        OnnxScorer("x", missing)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not onnx")
    with pytest.raises(ConfigError, match="is not a router scorer"):
        OnnxScorer("x", garbage)


@pytest.mark.parametrize(
    ("name", "backend", "embedder", "dim"),
    [
        ("difficulty", "local", "local:all-MiniLM-L6-v2", 384),
        ("difficulty", "static", "static:static-minilm-m2v", 256),
        ("mf", "local", "local:all-MiniLM-L6-v2", 384),
    ],
)
def test_bundled_scorers_load_and_name_their_embedder(name: str, backend: str, embedder: str, dim: int) -> None:
    from router_service.config import BUNDLED_SCORERS

    scorer = OnnxScorer(name, BUNDLED_SCORERS[name][backend])
    assert scorer.embedder == embedder
    assert scorer.embedding_dim == dim
    assert scorer.strong_model in scorer.models and scorer.weak_model in scorer.models
    # Calibrated: a higher strong share needs a lower threshold.
    assert scorer.threshold_for_share(0.2) > scorer.threshold_for_share(0.5) > scorer.threshold_for_share(0.8)
    # Scores spread over (0, 1) rather than crowding at one end, so thresholds stay readable.
    assert 0.05 < scorer.threshold_for_share(0.8) and scorer.threshold_for_share(0.2) < 0.98


def test_analytic_gradients_match_finite_differences() -> None:
    rng = np.random.default_rng(3)
    weights = random_weights(seed=3, text_dim=12, dim=5)
    params = {"P": weights.P.astype(np.float64), "W": weights.W.astype(np.float64), "w": weights.w.astype(np.float64)}
    e = rng.normal(size=(7, 12))
    a, b = rng.integers(0, 4, 7), rng.integers(0, 4, 7)
    y, weight = rng.random(7), rng.random(7) + 0.5
    _, grads = _forward_backward(params, e, a, b, y, weight)
    for name, value in params.items():
        numeric = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            old = value[index]
            value[index] = old + 1e-6
            up, _ = _forward_backward(params, e, a, b, y, weight)
            value[index] = old - 1e-6
            down, _ = _forward_backward(params, e, a, b, y, weight)
            value[index] = old
            numeric[index] = (up - down) / 2e-6
        np.testing.assert_allclose(grads[name], numeric, atol=1e-6, err_msg=name)


def test_training_recovers_a_planted_preference() -> None:
    """Model 0 wins on prompts along +u, model 1 along -u: MF must learn which is which."""
    rng = np.random.default_rng(7)
    embeddings = unit_rows(400, dim=32, seed=7)
    u = np.zeros(32, np.float32)
    u[0] = 1.0
    prompt = rng.integers(0, 400, 4000).astype(np.int32)
    side = embeddings[prompt] @ u
    p_a = (side > 0).astype(np.float32)
    weights = train_mf(
        embeddings, ["m0", "m1"], prompt, np.zeros(4000, np.int32), np.ones(4000, np.int32), p_a,
        TrainConfig(dim=8, epochs=15, batch_size=256, lr=1e-2, seed=0),
    )
    rate = weights.win_rate(embeddings, "m0", "m1")
    accuracy = np.mean((rate > 0.5) == (embeddings @ u > 0))
    assert accuracy > 0.9
    again = train_mf(
        embeddings, ["m0", "m1"], prompt, np.zeros(4000, np.int32), np.ones(4000, np.int32), p_a,
        TrainConfig(dim=8, epochs=15, batch_size=256, lr=1e-2, seed=0),
    )
    np.testing.assert_array_equal(weights.W, again.W)  # reproducible from the seed


# Written for this test (not from ../shared/data/sanity): everyday chat against tasks that need the strong model.
CHAT_WEAK = ["hi", "thanks a lot!", "What is the capital of Italy?", "good night, talk tomorrow"]
CHAT_STRONG = [
    "Prove that there are infinitely many prime numbers.",
    "Implement a thread-safe LRU cache in Java and prove that get and put are O(1).",
    "Derive the Black-Scholes equation from a delta-hedged portfolio and state every assumption.",
]


@pytest.mark.parametrize("backend", ["local", "static"])
async def test_default_scorer_sends_chit_chat_weak_and_proofs_strong(backend: str) -> None:
    """At the default 50% strong share, with each tier's own bundled difficulty scorer."""
    from router_service.config import RouterSettings
    from router_service.domain import RouteQuery
    from router_service.engine import open_engine

    async with open_engine(RouterSettings(embedder={"backend": backend})) as engine:
        decisions = await engine.route([RouteQuery(prompt=p) for p in CHAT_WEAK + CHAT_STRONG])
    routed = {p: d.routed_strong for p, d in zip(CHAT_WEAK + CHAT_STRONG, decisions, strict=True)}
    assert routed == {**dict.fromkeys(CHAT_WEAK, False), **dict.fromkeys(CHAT_STRONG, True)}
