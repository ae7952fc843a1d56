"""Routing labels from ../shared/data: battles between two models on one prompt.

Two file shapes (see data/README.md): pairwise files, one battle a line with a
soft label ``p_a``; and score files, one prompt a line with a score per
model, where every pair of models with different scores is a battle.
"""

from __future__ import annotations

import gzip
import itertools
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError

__all__ = [
    "ALIASES", "Battles", "HeldOut", "canonical_model", "default_data_dir", "load_battles", "mean_correctness",
    "read_jsonl", "read_prompts",
]

# One name per model across sources, so their labels train the same vector.
ALIASES = {
    "gpt4_1106_preview": "gpt-4-1106-preview",
    "gpt4_turbo": "gpt-4-1106-preview",
    "mistralai/mixtral-8x7b-chat": "mixtral-8x7b-instruct-v0.1",
    "Mixtral-8x7B-Instruct-v0.1": "mixtral-8x7b-instruct-v0.1",
    "mistralai/Mixtral-8x7B-Instruct-v0.1": "mixtral-8x7b-instruct-v0.1",
    "gpt-3.5-turbo-1106": "gpt-3.5-turbo-1106",
}


def canonical_model(name: str) -> str:
    return ALIASES.get(name, name)


def default_data_dir() -> Path:
    """../shared/data beside the project root."""
    return Path(__file__).resolve().parents[3] / "shared" / "data"


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                yield json.loads(line)


_NOT_WORD = re.compile(r"\W+")


class HeldOut:
    """Prompts training must not see (eval/, a validation split), matched after lower-casing and
    collapsing punctuation and whitespace, so a re-formatted copy is caught too."""

    def __init__(self, prompts: Iterable[str] = ()) -> None:
        self._keys = {self.key(p) for p in prompts}
        self.dropped = 0

    @staticmethod
    def key(prompt: str) -> str:
        return _NOT_WORD.sub(" ", prompt.lower()).strip()

    def __contains__(self, prompt: object) -> bool:
        return isinstance(prompt, str) and self.key(prompt) in self._keys

    def keep(self, prompt: str) -> bool:
        if prompt in self:
            self.dropped += 1
            return False
        return True


@dataclass
class Battles:
    """Columns of battles; prompts are indices into ``prompts``."""

    prompts: list[str]
    models: list[str]
    prompt: np.ndarray  # int32 [n]
    model_a: np.ndarray  # int32 [n]
    model_b: np.ndarray  # int32 [n]
    p_a: np.ndarray  # float32 [n], probability that model_a won
    source: np.ndarray  # int16 [n], index into sources
    sources: list[str]

    def __len__(self) -> int:
        return len(self.p_a)

    def subset(self, mask: np.ndarray) -> Battles:
        return Battles(
            self.prompts, self.models, self.prompt[mask], self.model_a[mask], self.model_b[mask],
            self.p_a[mask], self.source[mask], self.sources,
        )


def _pairwise(rows: Iterable[dict[str, Any]]) -> Iterator[tuple[str, str, str, float]]:
    for row in rows:
        yield row["prompt"], row["model_a"], row["model_b"], float(row["p_a"])


# A virtual opponent: a battle "m vs ANCHOR" with label = m's score on the prompt teaches the
# MF each model's probability of being right, not only who beat whom.
ANCHOR = "__correct__"


def _anchored(rows: Iterable[dict[str, Any]]) -> Iterator[tuple[str, str, str, float]]:
    for row in rows:
        for model, score in sorted(row["scores"].items()):
            if score is not None:
                yield row["prompt"], model, ANCHOR, float(score)


def _scores(rows: Iterable[dict[str, Any]]) -> Iterator[tuple[str, str, str, float]]:
    for row in rows:
        scored = sorted((m, s) for m, s in row["scores"].items() if s is not None)  # None: not evaluated
        for (a, sa), (b, sb) in itertools.combinations(scored, 2):
            if sa != sb:
                yield row["prompt"], a, b, 1.0 if sa > sb else 0.0


def load_battles(
    files: Iterable[Path], *, keep_ties: bool = True, anchored: bool = False, held_out: HeldOut | None = None
) -> Battles:
    """Read pairwise and score files into one table of battles, without ``held_out`` prompts."""
    held_out = held_out or HeldOut()
    prompt_ids: dict[str, int] = {}
    model_ids: dict[str, int] = {}
    sources: list[str] = []
    columns: tuple[list[int], list[int], list[int], list[float], list[int]] = ([], [], [], [], [])
    for path in files:
        source = path.name.split(".")[0]
        sources.append(source)
        rows = list(read_jsonl(path))
        if rows and "scores" in rows[0]:
            battles = _anchored(rows) if anchored else _scores(rows)
        else:
            battles = _pairwise(rows)
        kept: dict[str, bool] = {}
        for prompt, a, b, p_a in battles:
            a, b = canonical_model(a), canonical_model(b)
            if a == b or (p_a == 0.5 and not keep_ties and b != ANCHOR):
                continue
            if prompt not in kept:
                kept[prompt] = held_out.keep(prompt)
            if not kept[prompt]:
                continue
            columns[0].append(prompt_ids.setdefault(prompt, len(prompt_ids)))
            columns[1].append(model_ids.setdefault(a, len(model_ids)))
            columns[2].append(model_ids.setdefault(b, len(model_ids)))
            columns[3].append(p_a)
            columns[4].append(len(sources) - 1)
    return Battles(
        prompts=list(prompt_ids),
        models=list(model_ids),
        prompt=np.asarray(columns[0], np.int32),
        model_a=np.asarray(columns[1], np.int32),
        model_b=np.asarray(columns[2], np.int32),
        p_a=np.asarray(columns[3], np.float32),
        source=np.asarray(columns[4], np.int16),
        sources=sources,
    )


def mean_correctness(files: Iterable[Path], *, skip: Iterable[str] | HeldOut = ()) -> tuple[list[str], np.ndarray]:
    """Each prompt of the score (correctness) files with the mean score of the models that answered it.

    Pairwise files are passed over; prompts in ``skip`` (held out) are left out."""
    held_out = skip if isinstance(skip, HeldOut) else HeldOut(skip)
    prompts: list[str] = []
    accuracy: list[float] = []
    for path in files:
        for row in read_jsonl(path):
            if "scores" not in row:
                break  # a pairwise file
            values = [v for v in row["scores"].values() if v is not None]
            if values and held_out.keep(row["prompt"]):
                prompts.append(row["prompt"])
                accuracy.append(float(np.mean(values)))
    return prompts, np.asarray(accuracy)


def read_prompts(sources: Iterable[Path], *, unique: bool = True) -> list[str]:
    """Prompts from files (JSON lines with a "prompt" field, e.g. the gateway's capture files, or one
    prompt a line) and folders of them (every prompts*.jsonl* inside). ``unique``: the first occurrence
    of each (labelling); else every one (calibrating on traffic, where repeats count)."""
    files: list[Path] = []
    for source in sources:
        if source.is_dir():
            files.extend(sorted(p for p in source.glob("prompts*.jsonl*") if p.is_file()))
        elif source.is_file():
            files.append(source)
        else:
            raise ConfigError(f"--prompts: {source} does not exist")
    prompts = [text for path in files for text in _prompts_of(path) if text.strip()]
    return list(dict.fromkeys(prompts)) if unique else prompts


def _prompts_of(path: Path) -> Iterable[str]:
    """JSON lines (gzipped or not, rotated capture files too) when the file starts with "{"; else a prompt a line."""
    if path.suffix == ".gz" or path.read_text(encoding="utf-8").lstrip()[:1] == "{":
        for row in read_jsonl(path):
            if isinstance(row.get("prompt"), str):
                yield row["prompt"]
        return
    yield from (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
