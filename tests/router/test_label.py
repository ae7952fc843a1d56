"""`router-service label`: answers and verdicts through the real gateway, both orders, resumable."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway_service.server import GatewayApp, build_gateway
from router_service.training.data import load_battles, read_jsonl, read_prompts
from router_service.training.label import LabelJob, combine, label, parse_verdict, prompt_id
from tests.gateway.conftest import STRONG, WEAK, gateway_settings
from tests.http_servers import serve_app
from tests.llm_servers import LLMServerState, llm_app

JUDGE = "gpt-4o-mini"
GOOD = "A thorough, correct answer."


@pytest.mark.parametrize(
    ("text", "verdict"),
    [
        ("Both are fine but A is more complete.\nVerdict: A", "A"),
        ("Reasoning...\n\nVerdict: **B**", "B"),
        ("verdict: Tie", "tie"),
        ("The format is 'Verdict: A', 'Verdict: B' or 'Verdict: tie'. Having compared them:\nVerdict: B", "B"),
        ("MT-Bench style: [[C]]", "tie"),
        ("[[A]]", "A"),
        ("Final verdict - [B]", "B"),
        ("I prefer the first answer.", None),
        ("Verdict: a draw, really", None),
        ("", None),
    ],
)
def test_verdicts_are_parsed_or_refused_never_guessed(text: str, verdict: str | None) -> None:
    assert parse_verdict(text) == verdict


@pytest.mark.parametrize(
    ("strong_first", "weak_first", "p_strong"),
    [("A", "B", 1.0), ("B", "A", 0.0), ("A", "A", 0.5), ("B", "B", 0.5), ("tie", "tie", 0.5), ("A", "tie", 0.75)],
    ids=["strong-both-orders", "weak-both-orders", "position-bias-first", "position-bias-second", "tie", "half"],
)
def test_both_orders_are_averaged(strong_first: str, weak_first: str, p_strong: float) -> None:
    assert combine(strong_first, weak_first) == p_strong


def scripted(body: dict[str, Any]) -> tuple[str, ...]:
    """The models of these tests: the strong one answers well, the weak one badly, and the judge reads them."""
    model, content = body["model"], body["messages"][-1]["content"]
    if "fail" in content and model == WEAK and os.environ.get("LABEL_TEST_FAIL") == "1":
        raise RuntimeError("the weak model's server broke")  # Starlette answers 500
    if model == STRONG:
        return (GOOD,)
    if model == WEAK:
        return ("dunno",)
    question = content.split("[User question]\n", 1)[1]
    if question.startswith("judge-breaks"):
        raise RuntimeError("the judge's server broke")
    if question.startswith("garbage"):
        return ("Both answers have merit.",)
    if question.startswith("biased"):
        return ("Verdict: A",)  # always the first answer, whatever it is
    if question.startswith("same"):
        return ("They are equally good.\n", "Verdict: tie")
    first = content.split("[Answer A]\n", 1)[1]
    return ("The first answer is ", "better." if first.startswith(GOOD) else "worse.", "\nVerdict: ", "A" if first.startswith(GOOD) else "B")


@dataclass
class Labelling:
    gateway: GatewayApp
    judge: LLMServerState

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.gateway.http_port}"


@pytest.fixture
async def labelling(router_app) -> AsyncIterator[Labelling]:
    models, judge = LLMServerState(answer=scripted), LLMServerState(answer=scripted)
    async with serve_app(llm_app(models)) as ollama_url, serve_app(llm_app(judge)) as openai_url:
        gateway = await build_gateway(gateway_settings(router_app.port, ollama_url, openai_url))
        try:
            yield Labelling(gateway, judge)
        finally:
            await gateway.stop()


def battles(out: Path) -> list[dict[str, Any]]:
    files = [out / split / "own_traffic.jsonl" for split in ("train", "eval")]
    return [row for path in files if path.exists() for row in read_jsonl(path)]


async def test_label_writes_battles_in_the_shared_format_and_resumes(labelling, tmp_path, monkeypatch) -> None:
    prompts = ["What is 2+2?", "Explain TCP slow start.", "biased: say hi", "garbage: x", "same: hello", "fail: now"]
    job = LabelJob(gateway=labelling.url, strong=STRONG, weak=WEAK, judge=JUDGE, out=tmp_path, eval_share=0.5)
    monkeypatch.setenv("LABEL_TEST_FAIL", "1")

    counts = await label(job, prompts)

    assert counts | {"seconds": 0} == {
        "skipped": 0, "labelled": 4, "strong_wins": 2, "ties": 2, "consistent": 3, "unparsed": 1, "failed": 1,
        "seconds": 0,
    }
    rows = {row["prompt"]: row for row in battles(tmp_path)}
    assert set(rows) == {"What is 2+2?", "Explain TCP slow start.", "biased: say hi", "same: hello"}
    good = rows["What is 2+2?"]
    assert (good["model_a"], good["model_b"], good["winner"], good["p_a"]) == (STRONG, WEAK, "model_a", 1.0)
    assert good["verdicts"] == ["A", "B"] and good["judge"] == f"{JUDGE} (rubric pairwise-v1, both orders)"
    assert good["source"] == "own-traffic" and good["id"] == prompt_id("What is 2+2?")
    assert (rows["biased: say hi"]["winner"], rows["biased: say hi"]["p_a"]) == ("tie", 0.5)  # position bias cancelled
    assert rows["same: hello"]["verdicts"] == ["tie", "tie"]
    (unparsed,) = read_jsonl(tmp_path / "unparsed.jsonl")
    assert unparsed["prompt"] == "garbage: x" and unparsed["verdicts"] == [None, None]
    assert unparsed["judge_texts"] == ["Both answers have merit."] * 2  # recorded as said, not guessed
    (failure,) = read_jsonl(tmp_path / "failures.jsonl")
    assert failure["prompt"] == "fail: now" and failure["stage"] == "weak answer" and "HTTP 502" in failure["error"]
    # Each judge call saw the same question with the answers in both orders.
    judged = [r["body"]["messages"][0]["content"] for r in labelling.judge.requests if "What is 2+2?" in str(r["body"])]
    assert len(judged) == 2 and judged[0].index(GOOD) < judged[0].index("dunno") and judged[1].index("dunno") < judged[1].index(GOOD)
    # The files load as training data, with the pair as their models.
    loaded = load_battles(sorted(tmp_path.glob("*/own_traffic.jsonl")))
    assert set(loaded.models) == {STRONG, WEAK} and len(loaded) == 4

    monkeypatch.setenv("LABEL_TEST_FAIL", "0")
    again = await label(job, prompts)

    assert again | {"seconds": 0} == {"skipped": 5, "labelled": 1, "strong_wins": 1, "consistent": 1, "seconds": 0}
    assert sorted(row["prompt"] for row in battles(tmp_path)) == sorted(set(prompts) - {"garbage: x"})
    assert list(read_jsonl(tmp_path / "failures.jsonl")) == []


async def test_an_answer_from_the_gateway_s_fallback_model_is_a_failure_not_a_label(labelling, tmp_path) -> None:
    job = LabelJob(gateway=labelling.url, strong=STRONG, weak=WEAK, judge=JUDGE, out=tmp_path)
    counts = await label(job, ["judge-breaks: hello"])
    assert counts.get("labelled", 0) == 0 and counts["failed"] == 1
    (failure,) = read_jsonl(tmp_path / "failures.jsonl")
    assert f"{JUDGE} failed and the gateway's fallback model {WEAK} answered instead" in failure["error"]


async def test_label_refuses_a_model_the_gateway_does_not_serve(labelling, tmp_path) -> None:
    from router_service.errors import ConfigError

    job = LabelJob(gateway=labelling.url, strong="llama3:70b", weak=WEAK, judge=JUDGE, out=tmp_path)
    with pytest.raises(ConfigError, match=r"--strong 'llama3:70b' is not served by the gateway"):
        await label(job, ["hi"])
    job = LabelJob(gateway="http://127.0.0.1:9", strong=STRONG, weak=WEAK, judge=JUDGE, out=tmp_path)
    with pytest.raises(ConfigError, match=r"cannot reach http://127.0.0.1:9/v1/models"):
        await label(job, ["hi"])


async def test_the_command_resumes_after_a_kill_mid_run(labelling, tmp_path) -> None:
    """The real command, SIGKILLed while judging, then run again: every prompt labelled exactly once."""
    labelling.judge.chunk_delay_s = 0.1  # ~0.4 s a verdict: the kill lands mid-run
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(f"Question {i}: what is {i} squared?" for i in range(8)) + "\n")
    out = tmp_path / "labels"
    command = [
        sys.executable, "-m", "router_service", "label", "--prompts", str(prompts), "--strong", STRONG, "--weak", WEAK,
        "--judge", JUDGE, "--gateway", labelling.url, "--out", str(out), "--concurrency", "1",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTER_")}
    first = await asyncio.create_subprocess_exec(*command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    for _ in range(300):
        if len(battles(out)) >= 2:
            break
        await asyncio.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    await first.wait()
    before = len(battles(out))
    assert 2 <= before < 8

    with (out / "train" / "own_traffic.jsonl").open("a") as torn:  # as if the kill had landed mid-write
        torn.write('{"source": "own-traffic", "prompt": "Quest')
    second = await asyncio.create_subprocess_exec(*command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await second.communicate()

    assert second.returncode == 0, stderr.decode()
    summary = json.loads(stdout.decode().splitlines()[0])
    assert summary["skipped"] == before and summary["labelled"] == 8 - before
    ids = [row["id"] for row in battles(out)]
    assert len(ids) == len(set(ids)) == 8


def test_prompts_are_read_from_capture_folders_and_files(tmp_path) -> None:
    captures = tmp_path / "captures"
    captures.mkdir()
    (captures / "prompts.jsonl").write_text(json.dumps({"prompt": "a", "model": "m"}) + "\n" + json.dumps({"prompt": "b"}) + "\n")
    (captures / "prompts.jsonl.1").write_text(json.dumps({"prompt": "a"}) + "\n" + json.dumps({"prompt": "c"}) + "\n")
    (captures / "notes.txt").write_text("not a capture file\n")
    plain = tmp_path / "more.txt"
    plain.write_text("d\n\n e \n")
    assert read_prompts([captures, plain]) == ["a", "b", "c", "d", "e"]
    assert read_prompts([captures], unique=False) == ["a", "b", "a", "c"]  # calibration counts repeats
