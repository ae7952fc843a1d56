"""The static (model2vec) embedder: the bundled model, distilled from the default MiniLM."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from router_service.adapters.static_embedder import StaticEmbedder
from router_service.config import StaticEmbedderSettings
from router_service.errors import ConfigError

PROMPTS = json.loads((Path(__file__).parent / "data" / "minilm_reference.json").read_text())["prompts"]
# Four topics, four prompts each: what is near what should agree with MiniLM's view.
TOPICS = [
    "How do I look after a cat?", "What care does a kitten need?", "What should I feed my dog?",
    "How often should a puppy see the vet?",
    "How is capital gains tax computed?", "Can I deduct home office costs from income tax?",
    "When is the deadline for filing a tax return?", "What is a marginal tax rate?",
    "Write a Python function that reverses a linked list.", "Fix this JavaScript: let x = [1,2,3].mapp(f)",
    "How do I read a CSV file in Rust?", "Explain recursion with a code example in C.",
    "Solve for x: 3x + 7 = 22.", "What is the derivative of sin(x) * x^2?",
    "Prove that the square root of 2 is irrational.", "Compute the integral of 1/x from 1 to e.",
]


@pytest.fixture(scope="module")
def static_embedder() -> StaticEmbedder:
    return StaticEmbedder(StaticEmbedderSettings())


def test_unit_length_and_independent_of_batching(static_embedder: StaticEmbedder) -> None:
    together = static_embedder.embed_sync(PROMPTS)
    alone = np.stack([static_embedder.embed_sync([p])[0] for p in PROMPTS])
    assert together.shape == (len(PROMPTS), 256) and together.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(together, alone, atol=1e-6)


async def test_async_embed_matches_sync(static_embedder: StaticEmbedder, executor: ThreadPoolExecutor) -> None:
    from router_service.adapters import embed_async

    vectors = await embed_async(static_embedder, PROMPTS[:3], executor)
    np.testing.assert_array_equal(vectors, static_embedder.embed_sync(PROMPTS[:3]))


def test_keeps_the_similarity_structure_of_minilm(static_embedder: StaticEmbedder, local_embedder) -> None:
    """Distilled from MiniLM: which prompts are near each other mostly agrees with MiniLM."""
    static, minilm = static_embedder.embed_sync(TOPICS), local_embedder.embed_sync(TOPICS)
    upper = np.triu_indices(len(TOPICS), k=1)
    ranks = [np.argsort(np.argsort((v @ v.T)[upper])) for v in (static, minilm)]
    assert np.corrcoef(ranks[0], ranks[1])[0, 1] > 0.4  # 0.56 for the bundled model; unrelated vectors give ~0
    topic = np.repeat(np.arange(4), 4)
    same = topic[upper[0]] == topic[upper[1]]
    similarity = (static @ static.T)[upper]
    assert similarity[same].mean() > similarity[~same].mean() + 0.1


def test_similar_prompts_are_closer_than_unrelated_ones(static_embedder: StaticEmbedder) -> None:
    cats, kittens, tax = static_embedder.embed_sync(
        ["How do I look after a cat?", "What care does a kitten need?", "How is capital gains tax computed?"]
    )
    assert cats @ kittens > cats @ tax


def test_long_prompts_truncate_at_max_tokens() -> None:
    embedder = StaticEmbedder(StaticEmbedderSettings(max_tokens=16))
    base = "Explain the difference between a process and a thread. " * 4
    a, b = embedder.embed_sync([base, base + " Also mention fibers and coroutines in detail."])
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_a_folder_without_a_model_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"embedder\.static\.model_path: .* is not a model2vec folder"):
        StaticEmbedder(StaticEmbedderSettings(model_path=tmp_path))


def test_prompts_without_a_known_token_embed_to_zero_not_nan(static_embedder: StaticEmbedder) -> None:
    """Emoji, control characters and over-long words are unknown tokens, which model2vec drops."""
    vectors = static_embedder.embed_sync(["🙂🙂", "\x00", "a" * 10_000, "ꙮ x"])
    assert np.isfinite(vectors).all()
    np.testing.assert_array_equal(vectors[:3], 0.0)
    assert np.linalg.norm(vectors[3]) == pytest.approx(1.0, abs=1e-5)
