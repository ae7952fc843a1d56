"""Embeddings through the gateway, so a RAG app keeps one base URL: /v1/embeddings and Ollama's /api/embed.

No routing: an embedding model is asked for by name, and its vectors only make sense
from that model. The upstream that lists the model answers, with the same host pool,
retries and ejection as chats.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

from ..config import LimitSettings
from ..domain import Embedded
from ..errors import InvalidRequest, TooLarge
from ..routing.catalog import ModelCatalog
from ..upstreams import Upstream

__all__ = ["MAX_INPUTS", "EmbeddingService", "as_base64"]

MAX_INPUTS = 2048  # OpenAI's limit on inputs per request


def as_base64(vector: list[float]) -> str:
    """OpenAI's encoding_format=base64: little-endian float32, what the SDK asks for by default and decodes."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


class EmbeddingService:
    def __init__(self, catalog: ModelCatalog, by_model: dict[str, Upstream], limits: LimitSettings) -> None:
        self._catalog = catalog
        self._by_model = by_model
        self._limits = limits

    async def embed(self, model: str, given: Any, options: dict[str, Any]) -> Embedded:
        """``given``: a string or a list of strings (token arrays are refused, naming what to send)."""
        spec = self._catalog.resolve(model)  # an unknown name: 404 listing what is served
        if not spec.concrete:
            raise InvalidRequest(
                f"model {model!r} routes chats, not embeddings: ask for an embedding model by name (one an upstream "
                "lists, e.g. nomic-embed-text or text-embedding-3-small)"
            )
        inputs = [given] if isinstance(given, str) else given
        if not isinstance(inputs, list) or not all(isinstance(text, str) for text in inputs):
            raise InvalidRequest("input: give a string or a list of strings (token arrays are not taken here)")
        if not inputs:
            raise InvalidRequest("input is empty: give at least one string")
        if len(inputs) > MAX_INPUTS:
            raise InvalidRequest(f"input has {len(inputs)} strings, more than {MAX_INPUTS} in one request")
        chars = sum(len(text) for text in inputs)
        if chars > self._limits.max_prompt_chars:
            raise TooLarge(f"input holds {chars} characters, more than limits.max_prompt_chars={self._limits.max_prompt_chars}")
        return await self._by_model[model].embed(model, inputs, options)
