"""The local ONNX embedder against sentence-transformers' own output (computed with torch)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

REFERENCE = json.loads((Path(__file__).parent / "data" / "minilm_reference.json").read_text())


def test_matches_the_torch_reference(local_embedder) -> None:
    ours = local_embedder.embed_sync(REFERENCE["prompts"])
    reference = np.asarray(REFERENCE["embeddings"], np.float32)
    cosine = (ours * reference).sum(axis=1)
    assert cosine.min() > 1 - 1e-5, cosine


def test_unit_length_and_independent_of_batching(local_embedder) -> None:
    prompts = REFERENCE["prompts"]
    together = local_embedder.embed_sync(prompts)
    alone = np.stack([local_embedder.embed_sync([p])[0] for p in prompts])
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_long_prompts_truncate_at_256_tokens(local_embedder) -> None:
    base = "Explain the difference between a process and a thread. " * 40  # ~440 tokens
    a, b = local_embedder.embed_sync([base, base + " Also mention fibers and coroutines in detail."])
    np.testing.assert_allclose(a, b, atol=1e-6)  # the tail falls past the 256-token window


def test_similar_prompts_are_closer_than_unrelated_ones(local_embedder) -> None:
    cats, kittens, tax = local_embedder.embed_sync(
        ["How do I look after a cat?", "What care does a kitten need?", "How is capital gains tax computed?"]
    )
    assert cats @ kittens > cats @ tax + 0.2


def test_build_is_reproducible(tmp_path: Path) -> None:
    from router_service.adapters.bert_onnx import build_bert_onnx
    from router_service.adapters.local_embedder import source_model_dir

    build_bert_onnx(source_model_dir(), tmp_path / "a.onnx", name="all-MiniLM-L6-v2")
    build_bert_onnx(source_model_dir(), tmp_path / "b.onnx", name="all-MiniLM-L6-v2")
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
