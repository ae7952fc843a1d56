"""A static (model2vec) embedder: each token has a fixed vector, a prompt is their mean.

Distilled from the same all-MiniLM-L6-v2 as the default embedder (see
``router-service distill-static``), it embeds a short prompt in ~0.05 ms instead of
~3-5 ms, for about the same routing quality with the difficulty scorer (model card:
router_service/models/README.md). Inference is numpy and tokenizers; no torch.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from ..config import StaticEmbedderSettings
from ..errors import ConfigError

__all__ = ["StaticEmbedder"]


class StaticEmbedder:
    """An in-process embedder: callers pick the thread."""

    runs: Literal["in_process"] = "in_process"
    backend = "static"

    def __init__(self, settings: StaticEmbedderSettings) -> None:
        from model2vec import StaticModel

        if not (settings.model_path / "model.safetensors").is_file():
            raise ConfigError(
                f"embedder.static.model_path: {settings.model_path} is not a model2vec folder (no model.safetensors)"
            )
        self._model = StaticModel.from_pretrained(settings.model_path, normalize=True)
        self._max_tokens = settings.max_tokens
        self.name = f"static:{settings.model_path.name}"
        self.dim = int(self._model.dim)
        self.max_batch = settings.max_batch

    def embed_sync(self, texts: list[str]) -> np.ndarray:
        # No worker processes: batches here are small, and a fork per call would cost more.
        vectors = self._model.encode(texts, max_length=self._max_tokens, use_multiprocessing=False)
        return np.ascontiguousarray(vectors, dtype=np.float32)
