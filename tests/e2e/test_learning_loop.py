"""The learning loop end to end on real llama.cpp servers: capture -> label -> train -> reload -> route.

Two tiny GGUFs (tiny_gguf.py): one answers every prompt as both the strong and the weak
model, the other is the judge, scripted to say "Verdict: A" whatever it is shown. Such a
judge always prefers the first answer, so with both orders asked every battle is a tie:
the position bias is cancelled, as it must be. The commands are the README's, run as
processes against a real router and gateway.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import openai
import pytest

if importlib.util.find_spec("llama_cpp") is None:
    pytest.skip("needs llama-cpp-python[server]; `make test` installs it", allow_module_level=True)

from gateway_service.server import GatewayApp, build_gateway
from routing_api.router.v1 import router_pb2, router_pb2_grpc
from tests.e2e.llama_server import running_llama_server
from tests.e2e.tiny_gguf import write_tiny_gguf
from tests.gateway.conftest import STRONG, WEAK, gateway_settings

JUDGE = "judge"
PROMPTS = [
    "hi!", "Thanks a lot.", "What is the capital of France?", "Translate 'cat' into German.",
    "Prove that there are infinitely many primes.", "Write a Python function that merges two sorted lists.",
    "Explain how TCP congestion control works.", "What is 12 * 12?", "Plan a three-day trip to Rome.",
    "Summarise the plot of Hamlet in two sentences.", "Why is the sky blue?", "Debug: my for loop never ends.",
]


async def command(*args: str, cache: Path) -> dict[str, Any]:
    """`router-service ARGS` as a process; its last stdout line (JSON) and how long it took."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROUTER_", "GATEWAY_"))}
    env["XDG_CACHE_HOME"] = str(cache)
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router_service", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    assert "Traceback" not in stderr.decode()
    return {"stdout": stdout.decode(), "seconds": time.perf_counter() - started}


@pytest.fixture
async def loop_stack(router_app, tmp_path) -> AsyncIterator[tuple[GatewayApp, str]]:
    answers, judge = tmp_path / "answers.gguf", tmp_path / "judge.gguf"
    reply = write_tiny_gguf(answers, context=4096)  # the tiny models' tokens are bytes: the judge's prompt is long
    assert write_tiny_gguf(judge, "Verdict: A", context=4096) == "Verdict: A"
    with running_llama_server(answers, 4096) as answers_url, running_llama_server(judge, 4096) as judge_url:
        settings = gateway_settings(
            router_app.port, answers_url, judge_url,
            upstreams=[
                {"name": "answers", "provider": "openai", "base_url": f"{answers_url}/v1", "models": [STRONG, WEAK]},
                {"name": "judge", "provider": "openai", "base_url": f"{judge_url}/v1", "models": [JUDGE]},
            ],
            capture={"enabled": True, "rate": 1.0, "dir": tmp_path / "captures"},
        )
        app = await build_gateway(settings)
        try:
            yield app, reply
        finally:
            await app.stop()


async def test_capture_label_train_reload_route(router_app, loop_stack, tmp_path) -> None:
    gateway, reply = loop_stack
    timings: dict[str, float] = {}
    started = time.perf_counter()
    async with openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{gateway.http_port}/v1", api_key="x", max_retries=0) as sdk:
        for prompt in PROMPTS:  # 1. traffic through the router, captured
            answer = await sdk.chat.completions.create(
                model="router", messages=[{"role": "user", "content": prompt}], max_tokens=32
            )
            assert answer.choices[0].message.content == reply
    timings["traffic"] = time.perf_counter() - started
    await gateway.stop()  # flushes the capture file
    captured = [json.loads(line) for line in (tmp_path / "captures" / "prompts.jsonl").read_text().splitlines()]
    assert [c["prompt"] for c in captured] == PROMPTS and {c["scorer"] for c in captured} == {"difficulty"}
    old_version = captured[0]["scorer_version"]

    gateway = await build_gateway(gateway.settings)  # the same gateway again, for the labeller
    try:
        labels, new = tmp_path / "labels", tmp_path / "mine.onnx"
        cache = tmp_path / "cache"
        labelled = await command(  # 2. label through the gateway: both models answer, the judge compares
            "label", "--prompts", str(tmp_path / "captures"), "--strong", STRONG, "--weak", WEAK, "--judge", JUDGE,
            "--gateway", f"http://127.0.0.1:{gateway.http_port}", "--out", str(labels), "--max-tokens", "32",
            cache=cache,
        )
    finally:
        await gateway.stop()
    counts = json.loads(labelled["stdout"].splitlines()[0])
    timings["label"] = labelled["seconds"]
    assert counts["labelled"] == len(PROMPTS) and counts["ties"] == len(PROMPTS) and "failed" not in counts
    battles = [json.loads(line) for split in ("train", "eval") for line in (labels / split / "own_traffic.jsonl").read_text().splitlines()]
    assert {(b["verdicts"][0], b["verdicts"][1], b["p_a"]) for b in battles} == {("A", "A", 0.5)}  # bias cancelled

    trained = await command(  # 3. train on the labels
        "train", "--method", "mf", "--data-dir", str(labels), "--strong", STRONG, "--weak", WEAK, "--out", str(new),
        "--epochs", "3", "--dim", "16", "--no-eval", cache=cache,
    )
    timings["train"] = trained["seconds"]
    reloaded = await command(  # 4. swap it into the running router
        "reload", "--address", f"127.0.0.1:{router_app.port}", "--scorer", f"difficulty={new}", cache=cache
    )
    timings["reload"] = reloaded["seconds"]
    serving = json.loads(reloaded["stdout"])
    assert serving["swapped"] == ["difficulty"]
    new_version = serving["serving"]["scorers"][0]["version"]
    assert new_version != old_version

    async with grpc.aio.insecure_channel(f"127.0.0.1:{router_app.port}") as channel:  # 5. routed by the new scorer
        decision = await router_pb2_grpc.RouterServiceStub(channel).Route(
            router_pb2.RouteRequest(prompt="Prove that there are infinitely many primes."), timeout=10
        )
    assert decision.scorer_version == new_version and decision.model in (STRONG, WEAK)
    print(f"learning loop on llama.cpp: {len(PROMPTS)} prompts, timings (s): " + json.dumps({k: round(v, 1) for k, v in timings.items()}))
