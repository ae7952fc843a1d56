"""``router-service label``: battles from your own prompts, judged by your own model, through the gateway.

For each prompt, the strong and the weak model answer (asked by name through the gateway's
OpenAI-compatible API, so nothing is routed), then the judge compares the two answers twice,
once in each order, and the two verdicts are averaged: a judge that prefers whichever answer
comes first gives a tie, not a false win. The battles are written in the format of
../shared/data/train, split by a hash of the prompt into ``OUT/train`` and ``OUT/eval`` so
that ``train --data-dir OUT`` and ``eval --data-dir OUT`` work on them unchanged.

Resumable: every finished prompt is one appended line, and a rerun skips prompts already
labelled (or whose verdict could not be parsed; ``--retry-unparsed`` asks again). Failures
(timeouts, errors) are recorded per prompt in ``failures.jsonl`` and retried by the next run.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ..errors import ConfigError
from .data import read_jsonl

__all__ = ["RUBRIC_VERSION", "LabelJob", "combine", "judge_prompt", "label", "parse_verdict"]

logger = logging.getLogger(__name__)

RUBRIC_VERSION = "pairwise-v1"
RUBRIC = """You are an impartial judge. Compare the two assistant answers below to the user's question and \
decide which one serves the user better: correct, complete, helpful and clear, in that order of importance. \
Judge the content, not the length or the order in which the answers appear, and do not favour either \
assistant's name or style. If both are equally good (or equally bad), say tie.

Explain your reasoning in a few sentences, then write your verdict on the last line, exactly one of:
Verdict: A
Verdict: B
Verdict: tie

[User question]
{question}

[Answer A]
{answer_a}
[End of answer A]

[Answer B]
{answer_b}
[End of answer B]"""

# "Verdict: A" (any case for the word, markdown or brackets around the letter), or MT-Bench's
# [[A]] / [[B]] / [[C]] (C: tie). The last one in the text wins: judges often restate the format first.
_VERDICT = re.compile(
    r"(?i:verdict)\s*[:：=\-–—]?\s*[*\[(\"'`]*\s*(?P<word>A|B|(?i:tie))(?![A-Za-z])|\[\[(?P<mt>[ABC])\]\]"
)


def judge_prompt(question: str, answer_a: str, answer_b: str) -> str:
    return RUBRIC.format(question=question, answer_a=answer_a, answer_b=answer_b)


def parse_verdict(text: str) -> str | None:
    """"A", "B" or "tie" from a judge's answer; None when it states none (never guessed)."""
    found = None
    for match in _VERDICT.finditer(text):
        found = match
    if found is None:
        return None
    if found["mt"]:
        return {"A": "A", "B": "B", "C": "tie"}[found["mt"]]
    return "tie" if found["word"].lower() == "tie" else found["word"]


def combine(strong_first: str, weak_first: str) -> float:
    """P(strong won) from the verdicts of both orders: A is the strong answer in the first, the weak one in the second."""
    first = {"A": 1.0, "B": 0.0, "tie": 0.5}[strong_first]
    second = {"A": 0.0, "B": 1.0, "tie": 0.5}[weak_first]
    return (first + second) / 2


def prompt_id(prompt: str) -> str:
    return hashlib.sha256(prompt.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class LabelJob:
    gateway: str  # the gateway's root URL (with or without /v1)
    strong: str
    weak: str
    judge: str
    out: Path
    api_key: str | None = None
    concurrency: int = 4
    eval_share: float = 0.2
    max_tokens: int = 1024
    timeout_s: float = 300.0
    retry_unparsed: bool = False
    limit: int | None = None

    @property
    def api_base(self) -> str:
        url = self.gateway.rstrip("/")
        return url if url.endswith("/v1") else f"{url}/v1"


class _Failed(Exception):
    """A call for one prompt failed; recorded, never fatal."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(f"{stage}: {message}")
        self.stage = stage


class _Files:
    """The output folder: battles (train/ and eval/), unparsed verdicts, failures; one appended line each."""

    def __init__(self, out: Path, eval_share: float) -> None:
        self.battles = {split: out / split / "own_traffic.jsonl" for split in ("train", "eval")}
        self.unparsed = out / "unparsed.jsonl"
        self.failures = out / "failures.jsonl"
        self._eval_share = eval_share
        for path in self.battles.values():
            path.parent.mkdir(parents=True, exist_ok=True)
        for path in (*self.battles.values(), self.unparsed):
            _drop_torn_line(path)

    def done(self, include_unparsed: bool) -> set[str]:
        paths = [*self.battles.values(), *([self.unparsed] if include_unparsed else [])]
        return {row["id"] for path in paths if path.exists() for row in read_jsonl(path) if "id" in row}

    def split(self, pid: str) -> str:
        """Fixed per prompt (a hash), so reruns and added prompts never move a prompt between splits."""
        return "eval" if int(pid, 16) % 1000 < self._eval_share * 1000 else "train"

    @staticmethod
    def append(path: Path, row: dict[str, Any]) -> None:
        with path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _drop_torn_line(path: Path) -> None:
    """A run killed mid-write can leave half a line at the end: cut it, so the file stays JSON lines."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        with path.open("r+b") as f:
            f.truncate(cut)
        logger.warning("%s ended in half a line (an interrupted run): removed it; that prompt is labelled again", path)


async def _chat(http: httpx.AsyncClient, job: LabelJob, stage: str, model: str, content: str, **options: Any) -> str:
    body = {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": job.max_tokens, **options}
    try:
        response = await http.post("chat/completions", json=body)
    except httpx.TimeoutException:
        raise _Failed(stage, f"{model} did not answer within {job.timeout_s:g}s (--timeout)") from None
    except httpx.HTTPError as exc:
        raise _Failed(stage, f"{job.api_base}/chat/completions: {exc!r}") from None
    if response.status_code != 200:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:300]
        raise _Failed(stage, f"{model}: HTTP {response.status_code}: {message}")
    try:
        answered_by, content = response.json()["model"], response.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise _Failed(stage, f"{model}: not a chat completion: {response.text[:300]}") from None
    if answered_by != model:  # the gateway's fallback_model answered: a label from the wrong model is worse than none
        raise _Failed(stage, f"{model} failed and the gateway's fallback model {answered_by} answered instead")
    return str(content or "")


async def _check_gateway(http: httpx.AsyncClient, job: LabelJob) -> None:
    """Fatal only here, before any prompt: the gateway is unreachable, or does not serve a named model."""
    try:
        response = await http.get("models")
    except httpx.HTTPError as exc:
        raise ConfigError(f"--gateway: cannot reach {job.api_base}/models ({exc!r}): start the gateway or fix the URL") from None
    if response.status_code == 401:
        raise ConfigError(f"--gateway: {job.api_base} wants an API key: name its variable with --api-key-env")
    if response.status_code != 200:
        raise ConfigError(f"--gateway: {job.api_base}/models answered HTTP {response.status_code}: is this the gateway?")
    served = {m["id"] for m in response.json().get("data", [])}
    for flag, model in (("--strong", job.strong), ("--weak", job.weak), ("--judge", job.judge)):
        if model not in served:
            raise ConfigError(f"{flag} {model!r} is not served by the gateway; it serves {sorted(served)}")


async def _label_one(http: httpx.AsyncClient, job: LabelJob, prompt: str) -> list[str]:
    """Both answers, then both judgements: the judge's raw texts, strong answer first, then weak first."""
    strong, weak = await asyncio.gather(
        _chat(http, job, "strong answer", job.strong, prompt), _chat(http, job, "weak answer", job.weak, prompt)
    )
    verdicts = await asyncio.gather(
        _chat(http, job, "judge (strong first)", job.judge, judge_prompt(prompt, strong, weak), temperature=0),
        _chat(http, job, "judge (weak first)", job.judge, judge_prompt(prompt, weak, strong), temperature=0),
    )
    return list(verdicts)


async def label(job: LabelJob, prompts: list[str]) -> dict[str, Any]:
    """Label every prompt not yet done; returns the run's counts."""
    from tqdm import tqdm

    files = _Files(job.out, job.eval_share)
    done = files.done(include_unparsed=not job.retry_unparsed)
    todo = [p for p in prompts if prompt_id(p) not in done]
    if job.limit is not None:
        todo = todo[: job.limit]
    files.failures.write_text("")  # this run's failures
    counts: Counter[str] = Counter(skipped=len(prompts) - len(todo))
    judge_name = f"{job.judge} (rubric {RUBRIC_VERSION}, both orders)"
    started = time.perf_counter()
    headers = {"authorization": f"Bearer {job.api_key}"} if job.api_key else {}
    limits = httpx.Limits(max_connections=job.concurrency * 2, max_keepalive_connections=job.concurrency * 2)
    timeout = httpx.Timeout(job.timeout_s, connect=10.0)
    async with httpx.AsyncClient(base_url=job.api_base + "/", headers=headers, limits=limits, timeout=timeout) as http:
        await _check_gateway(http, job)
        gate = asyncio.Semaphore(job.concurrency)
        with tqdm(total=len(todo), unit="prompt", desc="labelling", disable=None) as bar:

            async def one(prompt: str) -> None:
                pid = prompt_id(prompt)
                async with gate:
                    try:
                        texts = await _label_one(http, job, prompt)
                    except _Failed as exc:
                        counts["failed"] += 1
                        files.append(files.failures, {"id": pid, "prompt": prompt, "stage": exc.stage, "error": str(exc)})
                        bar.update()
                        return
                verdicts = [parse_verdict(text) for text in texts]
                if verdicts[0] is None or verdicts[1] is None:
                    counts["unparsed"] += 1
                    files.append(files.unparsed, {
                        "id": pid, "prompt": prompt, "judge": judge_name, "verdicts": verdicts,
                        "judge_texts": [text[-2000:] for text in texts],
                    })
                else:
                    p_strong = combine(verdicts[0], verdicts[1])
                    winner = "model_a" if p_strong > 0.5 else "model_b" if p_strong < 0.5 else "tie"
                    counts[{"model_a": "strong_wins", "model_b": "weak_wins", "tie": "ties"}[winner]] += 1
                    counts["consistent"] += verdicts[0] == {"A": "B", "B": "A", "tie": "tie"}[verdicts[1]]
                    files.append(files.battles[files.split(pid)], {
                        "source": "own-traffic", "judge": judge_name, "prompt": prompt, "model_a": job.strong,
                        "model_b": job.weak, "winner": winner, "p_a": p_strong, "verdicts": verdicts, "id": pid,
                        "labelled": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                    })
                    counts["labelled"] += 1
                bar.update()

            await asyncio.gather(*(one(p) for p in todo))
    counts["seconds"] = round(time.perf_counter() - started)
    return dict(counts)
