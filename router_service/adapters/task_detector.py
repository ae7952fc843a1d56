"""The background-task detector: is this request a client's own task (a title, tags, a summary, a commit message)?

Chat clients and agents send, beside the user's turns, templated tasks of their own, each client in its own words;
the scorer sees a long, demanding-looking prompt and sends them strong, though a small model does them as well. A
list of patterns fits the clients it was written from; this detector is learned (training/tasks.py) from many
clients' templates against real user prompts, and scored on clients it never saw.

It is a logistic regression on what the router already has: the embedding of the user's words, of their last
part when they are long (a template that quotes a conversation and asks at the end), of the system prompt's head
(a client that puts its instruction there and the user's message after it), and the request's shape (a system
prompt, tools, a short output limit, a conversation quoted inside the prompt, its length). Being linear, each
text's part is a row head like a scorer's: its ONNX file maps an embedding to its three parts, computed in the
same batch as the scorers and cached with them, so a system prompt an agent repeats is embedded once. The shape's
weights, the bias and the threshold are the file's metadata: serving runs onnxruntime and numpy only.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .scorer import single_thread_session

__all__ = ["PARTS", "SHAPE", "TAIL_CHARS", "TAIL_FROM", "TaskDetector", "TaskView", "task_view"]

PARTS = ("words", "tail", "system")  # the embedded texts, one output column each
SHAPE = ("has_system", "system_length", "has_tools", "short_output", "quotes_chat", "length")
TAIL_FROM = 1_200  # words longer than this are also embedded by their end (a template that asks last) ...
TAIL_CHARS = 600  # ... this many characters of it
SYSTEM_CHARS = 1_000  # of the system prompt's head (the embedder reads ~256 tokens of it anyway)
SHORT_OUTPUT = 1_024  # an output limit at or under this is a short one

_QUOTED = re.compile(
    r"^\s*(?:\*\*)?(?:user|assistant|human|ai|bot|system|you|me)(?:\*\*)?\s*:|<(?:chat_history|conversation|"
    r"session|messages?|history|transcript)>|\"role\"\s*:\s*\"(?:user|assistant)\"",
    re.IGNORECASE | re.MULTILINE,
)


@dataclass(frozen=True, slots=True)
class TaskView:
    """What the detector reads of one request: the texts to embed (words, tail, system; "" for none) and the shape."""

    words: str
    tail: str
    system: str
    shape: tuple[float, ...]


def task_view(words: str, system: str = "", tools: int = 0, max_tokens: int = 0) -> TaskView:
    tail = words[-TAIL_CHARS:] if len(words) > TAIL_FROM else ""
    head = system.strip()[:SYSTEM_CHARS]
    quoted = len(_QUOTED.findall(words[:20_000]))
    shape = (
        1.0 if head else 0.0,
        math.log1p(len(system)) / 10,
        1.0 if tools > 0 else 0.0,
        1.0 if 0 < max_tokens <= SHORT_OUTPUT else 0.0,
        min(quoted, 4) / 4,
        math.log1p(len(words)) / 10,
    )
    return TaskView(words, tail, head, shape)


class TaskDetector:
    """One detector file: a row head for the scoring pipeline (``name``, ``models``, ``model_scores_sync``) and the
    decision on a request's rows."""

    def __init__(self, path: Path, name: str = "background-task") -> None:
        if not path.is_file():
            raise ConfigError(f"routing.task_detector: {path} does not exist")
        try:
            self._session, meta = single_thread_session(path)
            self.version = meta["detector.version"]
            self.embedder = meta["embedder.name"]
            self.embedding_dim = int(meta["embedder.dim"])
            self.threshold = float(meta["detector.threshold"])
            self.bias = float(meta["detector.bias"])
            weights = json.loads(meta["detector.shape_weights"])
            self.shape_weights = np.array([float(weights[name]) for name in SHAPE])
            self.training = json.loads(meta.get("detector.training", "{}"))
        except Exception as exc:  # onnxruntime's load errors share no base class but Exception
            raise ConfigError(f"routing.task_detector: {path} is not a background-task detector ({exc})") from exc
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"routing.task_detector: {path} has threshold {self.threshold}, not within (0, 1)")
        self.name = name
        self.path = path
        self.models: tuple[str, ...] = PARTS  # the pipeline's columns for this head

    def model_scores_sync(self, embeddings: np.ndarray) -> np.ndarray:
        """Each embedding's part under each of the three weights (words, tail, system)."""
        result: list[np.ndarray] = self._session.run(None, {"embedding": embeddings})
        return result[0]

    def probability(self, view: TaskView, words: np.ndarray, tail: np.ndarray | None, system: np.ndarray | None) -> float:
        """The chance the request is a client's background task, from its three texts' rows (this head's columns)."""
        logit = self.bias + float(words[0]) + float((tail if tail is not None else words)[1])
        if system is not None:
            logit += float(system[2])
        logit += float(self.shape_weights @ np.asarray(view.shape))
        return 1.0 / (1.0 + math.exp(-logit))
