"""Train the background-task detector (adapters/task_detector.py) and export it to ONNX.

Positives: the templates of clients' background tasks (task_templates.py, the held-out clients left out), each
filled many times from real user prompts of the training data. Negatives: those user prompts as users send them:
alone, or inside an agent's or a chat UI's request (a long system prompt, tools, an output limit), the system
prompts taken from the recorded clients (../shared/clients) and written here. A logistic regression on the
detector's features (task_view) is fit; its threshold is set above every training negative. Then the held-out
clients' tasks (recall) and every eval/ and sanity/ prompt (none may be taken) are scored, and the figures go
into the file's metadata and the model card.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..adapters.task_detector import PARTS, SHAPE, TaskView, task_view
from .data import read_jsonl
from .embeddings import EmbeddingStore
from .task_templates import HELD_OUT, TEMPLATES, Template

__all__ = ["DetectorReport", "build_examples", "export_detector", "fit_detector", "held_out_examples", "score_views"]

logger = logging.getLogger(__name__)

PER_TEMPLATE = 80  # filled copies of each training template
PER_HELD_OUT = 40  # ... of each held-out one, to report on
LANGS = ("English", "French", "German", "Spanish", "Chinese", "Japanese", "Portuguese", "Russian")
# System prompts a real user's request arrives with (beside the recorded clients' own).
SYSTEMS = (
    "You are a helpful assistant.",
    "You are an expert Python developer. Answer with working code and a short explanation.",
    "You are Seraphina, a kind forest guardian. Stay in character and describe your actions in italics.",
    "Always answer in French, whatever language the user writes in.",
    "You are a senior data engineer helping a team migrate from Airflow to Dagster.",
    "You are a patient maths tutor. Explain every step and check the student's understanding.",
    "Knowledge cutoff: 2024-06. Current date: 2026-05-01. Be concise.",
    "You are an AI assistant that helps people find information. Cite sources when you can.",
)
CODE_LINES = (
    "def {name}(items):", "    return sorted(items, key=len)", "import {name}", "const {name} = require('{name}');",
    "if (!{name}) throw new Error('missing {name}');", "    for item in items:", "        total += item.price",
    "class {Name}Service:", "    self.{name} = {name}", "export function {name}() {{", "  return fetch(url);", "}}",
    "SELECT * FROM {name} WHERE id = ?;", "    logger.info(\"{name} done\")", "retries = 3",
)


@dataclass(frozen=True)
class Example:
    view: TaskView
    label: int  # 1: a client's background task
    client: str = ""
    kind: str = ""


def _turns(rng: random.Random, prompts: Sequence[str], n: int) -> list[tuple[str, str]]:
    out = []
    for _ in range(n):
        ask = rng.choice(prompts)[:700]
        said = rng.choice(prompts)[:400]
        out.append(("user", ask))
        out.append(("assistant", f"{rng.choice(('Sure.', 'Here is what I found.', 'Good question.', 'Of course!'))} {said}"))
    return out


def _quoted(turns: list[tuple[str, str]], style: str) -> str:
    names = {"role_lines": ("User", "Assistant"), "caps": ("USER", "ASSISTANT"), "human_ai": ("Human", "AI"),
             "markdown": ("**User**", "**Assistant**")}
    if style == "json":
        return json.dumps([{"role": role, "content": text} for role, text in turns], ensure_ascii=False)
    if style == "xml":
        return "\n".join(f"<message role=\"{role}\">{text}</message>" for role, text in turns)
    user, assistant = names[style]
    return "\n".join(f"{user if role == 'user' else assistant}: {text}" for role, text in turns)


def _diff(rng: random.Random, prompts: Sequence[str]) -> str:
    words = [w.strip(".,?!:;\"'()").lower() for w in rng.choice(prompts).split() if w.isalpha() and len(w) > 3]
    name = rng.choice(words or ["value"])
    path = f"{rng.choice(('src', 'lib', 'app', 'pkg'))}/{name}.{rng.choice(('py', 'ts', 'go', 'js'))}"
    lines = [f"diff --git a/{path} b/{path}", f"--- a/{path}", f"+++ b/{path}", f"@@ -{rng.randint(1, 300)},7 +1,9 @@"]
    for _ in range(rng.randint(4, 16)):
        line = rng.choice(CODE_LINES).format(name=name, Name=name.title())
        lines.append(f"{rng.choice('+- ')}{line}")
    return "\n".join(lines)


def _fill(template: Template, rng: random.Random, prompts: Sequence[str], augment: bool = True) -> Example:
    turns = _turns(rng, prompts, rng.randint(1, 3))
    slots = {
        "conversation": _quoted(turns, template.quote), "prompt": turns[0][1], "text": rng.choice(prompts)[:1500],
        "diff": _diff(rng, prompts), "lang": rng.choice(LANGS),
    }
    words, system = template.user.format(**slots), template.system
    slot = next((name for name in ("conversation", "prompt", "diff") if f"{{{name}}}" in template.user), None)
    if augment and not system and slot is not None and rng.random() < 0.3:  # the same task, asked in the system prompt
        system, words = template.user.replace(f"{{{slot}}}", "(below)").format(**slots), slots[slot]
    max_tokens = template.max_tokens if rng.random() < 0.8 else 0  # a client's limit, sometimes unset by its user
    return Example(task_view(words, system, 0, max_tokens), 1, template.client, template.kind)


def _users(rng: random.Random, prompt: str, systems: Sequence[str]) -> Example:
    """A user's prompt as it arrives: alone, or in an agent's or a chat UI's request."""
    roll = rng.random()
    max_tokens = rng.choice((0, 0, 0, 256, 512, 1024, 4096, 32000)) if rng.random() < 0.5 else 0
    if roll < 0.55:
        return Example(task_view(prompt, "", 0, max_tokens), 0)
    system = rng.choice(systems)
    tools = rng.choice((0, 1, 13, 36)) if roll < 0.85 else 0
    return Example(task_view(prompt, system, tools, max_tokens), 0)


def recorded_systems(clients_dir: Path) -> list[str]:
    """The system prompts (their heads) the recorded clients send with a user's turn (not their title tasks)."""
    found: list[str] = []
    for path in sorted(clients_dir.glob("*/requests.jsonl")):
        for row in read_jsonl(path):
            body = row.get("body") or {}
            if not body.get("tools"):
                continue  # a background task of its own (Claude Code's title request has no tools)
            system = body.get("system")
            if isinstance(system, list):
                system = "\n".join(b.get("text", "") for b in system if isinstance(b, dict))
            for item in body.get("input") or body.get("messages") or ():
                if isinstance(item, dict) and item.get("role") in ("system", "developer") and not system:
                    content = item.get("content")
                    system = content if isinstance(content, str) else "\n".join(
                        p.get("text", "") for p in content or () if isinstance(p, dict))
            if isinstance(system, str) and system.strip():
                found.append(system[:2000])
    return list(dict.fromkeys(found))


def build_examples(
    prompts: Sequence[str], systems: Sequence[str], *, seed: int = 0, negatives: int = 12_000
) -> tuple[list[Example], list[Example]]:
    """(training examples, held-out clients' tasks)."""
    rng = random.Random(seed)
    pool = list(prompts)
    train = [_fill(t, rng, pool) for t in TEMPLATES if t.client not in HELD_OUT for _ in range(PER_TEMPLATE)]
    held = [_fill(t, rng, pool, augment=False) for t in TEMPLATES if t.client in HELD_OUT for _ in range(PER_HELD_OUT)]
    every_system = [*SYSTEMS, *systems]
    train += [_users(rng, p, every_system) for p in rng.sample(pool, min(negatives, len(pool)))]
    return train, held


def held_out_examples(prompts: Sequence[str], *, seed: int = 1, per_template: int = PER_HELD_OUT) -> list[Example]:
    """Tasks of the clients never trained on, filled from ``prompts`` (another seed than training's: other fills)."""
    rng = random.Random(seed)
    pool = list(prompts)
    return [_fill(t, rng, pool, augment=False) for t in TEMPLATES if t.client in HELD_OUT for _ in range(per_template)]


def _texts(views: Iterable[TaskView]) -> list[str]:
    return list(dict.fromkeys(t for v in views for t in (v.words, v.tail, v.system) if t))


def features(views: Sequence[TaskView], store: EmbeddingStore, *, progress: bool = True) -> np.ndarray:
    """[words | tail (the words' own when short) | system (zeros without one) | shape], one row a view."""
    texts = _texts(views)
    table = dict(zip(texts, store.get(texts, progress=progress), strict=True))
    dim = next(iter(table.values())).shape[0]
    zeros = np.zeros(dim, dtype=np.float32)
    rows = [
        np.concatenate([table[v.words], table[v.tail or v.words], table[v.system] if v.system else zeros,
                        np.asarray(v.shape, dtype=np.float32)])
        for v in views
    ]
    return np.stack(rows)


@dataclass(frozen=True)
class Fitted:
    parts: np.ndarray  # [dim, 3]: the words, tail and system weights
    shape_weights: dict[str, float]
    bias: float
    threshold: float


def fit_detector(x: np.ndarray, y: np.ndarray, *, c: float = 3.0, margin: float = 0.05, floor: float = 0.7) -> Fitted:
    """A balanced logistic regression; the threshold above the highest-scored training negative by ``margin``, and at
    least ``floor`` (a user's prompt is only ever taken for a task when the detector is sure)."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, class_weight="balanced", max_iter=5_000)
    model.fit(x, y)
    coef = model.coef_[0]
    dim = (x.shape[1] - len(SHAPE)) // 3
    parts = np.stack([coef[:dim], coef[dim:2 * dim], coef[2 * dim:3 * dim]], axis=1).astype(np.float32)
    negatives = model.predict_proba(x[y == 0])[:, 1]
    threshold = float(min(max(float(negatives.max()) + margin, floor), 0.99))
    shape = {name: float(w) for name, w in zip(SHAPE, coef[3 * dim:], strict=True)}
    return Fitted(parts, shape, float(model.intercept_[0]), threshold)


def score_views(fitted: Fitted, x: np.ndarray) -> np.ndarray:
    dim = fitted.parts.shape[0]
    logit = (x[:, :dim] @ fitted.parts[:, 0] + x[:, dim:2 * dim] @ fitted.parts[:, 1]
             + x[:, 2 * dim:3 * dim] @ fitted.parts[:, 2] + x[:, 3 * dim:] @ np.array([fitted.shape_weights[s] for s in SHAPE])
             + fitted.bias)
    return np.asarray(1.0 / (1.0 + np.exp(-logit)))


@dataclass(frozen=True)
class DetectorReport:
    train_positives: int
    train_negatives: int
    train_recall: float
    held_out: dict[str, float]  # client -> share of its tasks taken
    held_out_recall: float
    eval_prompts: int
    eval_taken: int
    eval_taken_examples: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {
            "train_positives": self.train_positives, "train_negatives": self.train_negatives,
            "train_recall": round(self.train_recall, 4), "held_out_clients": sorted(HELD_OUT),
            "held_out_recall": round(self.held_out_recall, 4),
            "held_out_by_client": {k: round(v, 4) for k, v in sorted(self.held_out.items())},
            "eval_sanity_prompts": self.eval_prompts, "eval_sanity_taken": self.eval_taken,
        }


def report(fitted: Fitted, x: np.ndarray, y: np.ndarray, held: list[Example], x_held: np.ndarray,
           eval_prompts: Sequence[str], x_eval: np.ndarray) -> DetectorReport:
    taken = score_views(fitted, x) >= fitted.threshold
    held_taken = score_views(fitted, x_held) >= fitted.threshold
    by_client: Counter[str] = Counter(e.client for e in held)
    hits: Counter[str] = Counter(e.client for e, hit in zip(held, held_taken, strict=True) if hit)
    eval_taken = score_views(fitted, x_eval) >= fitted.threshold
    return DetectorReport(
        int(y.sum()), int((y == 0).sum()), float(taken[y == 1].mean()),
        {client: hits[client] / n for client, n in by_client.items()}, float(held_taken.mean()),
        len(eval_prompts), int(eval_taken.sum()), [p[:100] for p, t in zip(eval_prompts, eval_taken, strict=True) if t][:10],
    )


def export_detector(fitted: Fitted, out: Path, *, embedder: str, dim: int, version: str, training: dict[str, Any]) -> None:
    """The row head (embedding -> its three parts) as ONNX; the rest is its metadata."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(fitted.parts.astype(np.float32), name="parts_weights")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["embedding", "parts_weights"], ["parts"])],
        "background_task_detector",
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", dim])],
        [helper.make_tensor_value_info("parts", TensorProto.FLOAT, ["batch", len(PARTS)])],
        [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="routestack")
    model.ir_version = 8
    helper.set_model_props(model, {
        "detector.version": version, "embedder.name": embedder, "embedder.dim": str(dim),
        "detector.threshold": repr(fitted.threshold), "detector.bias": repr(fitted.bias),
        "detector.shape_weights": json.dumps(fitted.shape_weights, sort_keys=True),
        "detector.parts": json.dumps(PARTS), "detector.training": json.dumps(training, sort_keys=True),
    })
    onnx.checker.check_model(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(out))
