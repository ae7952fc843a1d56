"""Embeddings for training and evaluation, cached on disk by text hash.

Embedding ~40k prompts takes minutes on 2 cores; every later run of train,
calibrate or eval with the same embedder reads them back in a second.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

__all__ = ["EmbeddingStore"]

CHUNK = 256


def _key(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


class EmbeddingStore:
    """A text -> vector store for one embedder, kept in one .npz file."""

    def __init__(self, path: Path, embed: Callable[[list[str]], np.ndarray]) -> None:
        self._path = path
        self.embed = embed  # what fills the store; benches time it
        self._rows: dict[bytes, np.ndarray] = {}
        if path.is_file():
            with np.load(path) as saved:
                keys = saved["keys"]
                # Keys are 16 raw bytes a row. (Older files stored them as "S16", which drops
                # trailing NUL bytes; padding restores them.)
                names = [bytes(k) for k in keys] if keys.dtype == np.uint8 else [k.ljust(16, b"\0") for k in keys.tolist()]
                self._rows = dict(zip(names, saved["vectors"], strict=True))

    def get(self, texts: Sequence[str], *, progress: bool = True) -> np.ndarray:
        keys = [_key(t) for t in texts]
        missing = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in self._rows}.items(),
                         key=lambda kt: len(kt[1]))  # similar lengths together: less padding
        if missing:
            self._fill(missing, progress)
        return np.stack([self._rows[k] for k in keys])

    def _fill(self, missing: list[tuple[bytes, str]], progress: bool) -> None:
        from tqdm import tqdm

        with tqdm(total=len(missing), desc="embedding prompts", unit="prompt", disable=not progress) as bar:
            for start in range(0, len(missing), CHUNK):
                chunk = missing[start : start + CHUNK]
                vectors = self.embed([text for _, text in chunk])
                for (key, _), vector in zip(chunk, vectors, strict=True):
                    self._rows[key] = vector
                bar.update(len(chunk))
        self._save()

    def _save(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_name(self._path.name + ".tmp.npz")
        keys = np.frombuffer(b"".join(self._rows), dtype=np.uint8).reshape(-1, 16)
        np.savez(tmp, keys=keys, vectors=np.stack(list(self._rows.values())).astype(np.float32))
        tmp.replace(self._path)
