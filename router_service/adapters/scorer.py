"""An exported MF scorer in onnxruntime (called from the pipeline's worker thread)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ..errors import ConfigError, Uncalibrated
from ..mf import sigmoid

__all__ = ["OnnxScorer", "single_thread_session"]


def single_thread_session(path: Path) -> tuple[ort.InferenceSession, dict[str, str]]:
    """An onnxruntime session on one thread (the pipeline runs heads side by side in its worker) and the file's
    metadata; raises onnxruntime's own error for a file that is not a model."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session, dict(session.get_modelmeta().custom_metadata_map)


class OnnxScorer:
    """Loads a scorer file and its metadata (models, pair, embedder, thresholds)."""

    def __init__(self, name: str, path: Path) -> None:
        try:
            found = path.is_file()
        except (OSError, ValueError) as exc:  # a NUL in it, a name too long for the file system
            raise ConfigError(f"scorers[{name}].path is not a usable file path ({exc})") from None
        if not found:
            raise ConfigError(f"scorers[{name}].path: {path} does not exist")
        try:
            self._session, meta = single_thread_session(path)
            self.models: tuple[str, ...] = tuple(json.loads(meta["scorer.models"]))
            self.strong_model = meta["scorer.strong_model"]
            self.weak_model = meta["scorer.weak_model"]
            self.embedder = meta["embedder.name"]
            self.embedding_dim = int(meta["embedder.dim"])
            self.version = meta["scorer.version"]
            self.thresholds = {float(k): float(v) for k, v in json.loads(meta["scorer.thresholds"]).items()}
            self.training = json.loads(meta.get("scorer.training", "{}"))
        except Exception as exc:  # onnxruntime's load errors share no base class but Exception
            raise ConfigError(f"scorers[{name}].path: {path} is not a router scorer ({exc})") from exc
        self.name = name
        self.path = path
        self._stamp = _file_stamp(path)
        self._check(f"scorers[{name}].path: {path}")
        self.strong_index = self.models.index(self.strong_model)
        self.weak_index = self.models.index(self.weak_model)

    def _check(self, where: str) -> None:
        """What serving relies on, checked once here, so a broken file is refused at load (and at reload)
        rather than making every Route fail: the pair among the models, one output per model, and sane
        calibrated thresholds."""
        if not self.models or not all(isinstance(m, str) and m for m in self.models):
            raise ConfigError(f"{where}: scorer.models must list model names; it lists {list(self.models)[:5]}")
        for role, model in (("strong", self.strong_model), ("weak", self.weak_model)):
            if model not in self.models:
                raise ConfigError(f"{where}: its {role} model {model!r} is not among its models {list(self.models)[:10]}")
        for share, threshold in self.thresholds.items():
            if not (0.0 < share < 1.0 and 0.0 <= threshold <= 1.0):  # NaN fails both
                raise ConfigError(f"{where}: calibrated threshold {threshold} for share {share}: "
                                  "shares must be within (0, 1) and thresholds within [0, 1]")
        if self.embedding_dim < 1:
            raise ConfigError(f"{where}: embedder.dim is {self.embedding_dim}")
        try:
            scores = self.model_scores_sync(np.zeros((2, self.embedding_dim), dtype=np.float32))
        except Exception as exc:
            raise ConfigError(f"{where}: scoring a batch of {self.embedding_dim}-dim embeddings failed ({exc})") from exc
        if scores.shape != (2, len(self.models)):
            raise ConfigError(
                f"{where}: it scores {scores.shape[-1] if scores.ndim else 0} models a prompt but lists {len(self.models)}"
            )
        if not np.isfinite(scores).all():
            raise ConfigError(f"{where}: it gives non-finite scores")

    def is_file(self, path: Path) -> bool:
        """True when ``path`` is the file this scorer was loaded from, unchanged since."""
        try:
            return path.resolve() == self.path.resolve() and _file_stamp(path) == self._stamp
        except OSError:
            return False

    def win_rate(self, model_scores: np.ndarray) -> float:
        """The strong model's predicted win rate over the weak one, from one row of ``model_scores``."""
        return float(sigmoid(model_scores[self.strong_index] - model_scores[self.weak_index]))

    def model_scores_sync(self, embeddings: np.ndarray) -> np.ndarray:
        """[batch, models] scores; microseconds, so callers batch it with the embedding job."""
        return np.asarray(self._session.run(["model_scores"], {"embedding": embeddings})[0])

    def threshold_for_share(self, share: float) -> float:
        """The threshold that sent ``share`` of the calibration prompts to the strong model.

        Linear interpolation between calibrated points; share 0 and 1 are exact
        (threshold above or below every score)."""
        if share <= 0.0:
            return 1.0
        if share >= 1.0:
            return 0.0
        if not self.thresholds:
            raise Uncalibrated(
                f"scorer {self.name!r} has no calibrated thresholds, so a strong-call share means nothing to it yet "
                f"(an imported RouteLLM checkpoint): route with a threshold (model router-mf-0.11593, routing.threshold), "
                f"or calibrate it on your prompts: router-service calibrate --prompts FILE --scorer {self.path}"
            )
        shares = np.array(sorted(self.thresholds))
        values = np.array([self.thresholds[s] for s in shares])
        return float(np.interp(share, shares, values))


def _file_stamp(path: Path) -> tuple[int, int, int]:
    stat = path.stat()
    return stat.st_ino, stat.st_mtime_ns, stat.st_size
