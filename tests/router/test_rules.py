"""Rules before the scorer (issue #24): clients' background tasks go weak, and loops do not tilt the live window."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import grpc
import pytest

from router_service.config import RouterSettings, RoutingSettings
from router_service.domain import ChatMessage, RouteQuery
from router_service.engine import open_engine
from router_service.rules import Rules
from routing_api.router.v1 import router_pb2, router_pb2_grpc
from tests.conftest import ROOT, SHARED_DATA

UTILITY = [json.loads(line) for line in (Path(__file__).parent / "data" / "utility_prompts.jsonl").read_text().splitlines()]
RECORDED = ROOT.parent / "shared" / "clients" / "open-webui-0.12.4" / "requests.jsonl"


def open_webui_tasks() -> list[str]:
    """The background-task prompts Open WebUI sent in the recorded run (title, tags, follow-ups)."""
    tasks = []
    for line in RECORDED.read_text().splitlines():
        body = json.loads(line)["body"] or {}
        tasks += [m["content"] for m in body.get("messages", ()) if m["role"] == "user" and m["content"].startswith("### Task:")]
    return list(dict.fromkeys(tasks))


async def route_all(port: int, prompts: list[str]) -> list[router_pb2.RouteResponse]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        return [await stub.Route(router_pb2.RouteRequest(prompt=p), timeout=30) for p in prompts]


@pytest.mark.skipif(not RECORDED.exists(), reason="../shared/clients is not beside this checkout")
async def test_open_webui_s_task_prompts_route_weak(router_app) -> None:
    """They scored 0.78-0.85 against a threshold of 0.49: every one went strong."""
    tasks = open_webui_tasks()
    answers = await route_all(router_app.port, tasks)
    weak = [a for a in answers if not a.routed_strong]
    assert len(tasks) >= 5 and len(weak) / len(tasks) >= 0.9, [(a.model, a.rule) for a in answers]
    assert {a.rule for a in weak} == {"client-utility"} and all(a.score == 0.0 for a in weak)


async def test_utility_prompts_in_other_clients_styles_route_weak(router_app) -> None:
    """Titles, tags, follow-ups, search queries, autocompletion, language and topic detection, as other clients
    word them (written for this test, from no evaluation set)."""
    answers = await route_all(router_app.port, [row["prompt"] for row in UTILITY])
    weak = [row["style"] for row, a in zip(UTILITY, answers, strict=True) if not a.routed_strong]
    assert len(weak) / len(UTILITY) >= 0.8, sorted({row["style"] for row in UTILITY} - set(weak))


def test_the_built_in_rule_matches_no_evaluation_or_sanity_prompt() -> None:
    """So the scorer's figures (sanity AUC and weak share, MT-Bench APGR) are what they were."""
    rules = Rules(RoutingSettings())
    for path in [*sorted((SHARED_DATA / "eval").glob("*.jsonl.gz")), *sorted((SHARED_DATA / "sanity").glob("*.jsonl.gz"))]:
        with gzip.open(path, "rt") as lines:
            matched = [row["prompt"][:80] for row in map(json.loads, lines) if rules.match(row["prompt"])]
        assert matched == [], (path.name, matched[:3])


async def test_a_configured_rule_decides_first_and_the_built_in_one_can_be_switched_off() -> None:
    proofs = {"name": "proofs", "pattern": r"^\s*prove\b", "tier": "strong"}
    settings = RouterSettings(embedder={"backend": "static"}, routing={"rules": [proofs], "utility_rule": False})
    async with open_engine(settings) as engine:
        proof, task = await engine.route([
            RouteQuery(prompt="Prove that 2 + 2 = 4."),
            RouteQuery(prompt="### Task:\nGenerate a concise title for the chat history."),
        ])
    assert (proof.rule, proof.routed_strong, proof.model) == ("proofs", True, settings.routing.strong_model)
    assert task.rule == "" and task.scorer_name  # scored, as the built-in rule is off
    with pytest.raises(ValueError, match="not a regular expression"):
        RoutingSettings(rules=[{"name": "bad", "pattern": "(unclosed"}])


async def test_repeats_and_callers_own_thresholds_stay_out_of_the_live_window() -> None:
    """A 250-round tool loop re-sends its last user message each round: those 250 identical scores moved the
    live threshold for everyone (0.49 -> 0.12, and a fresh "hi" went strong)."""
    settings = RouterSettings(embedder={"backend": "static"}, routing={"live_window": 100, "live_warmup": 20})
    loop = (ChatMessage("user", "hi"), ChatMessage("assistant", "calling a tool"), ChatMessage("tool", "42"))
    async with open_engine(settings) as engine:
        for _ in range(250):
            await engine.route([RouteQuery(messages=loop, strong_share=0.5)])
        for i in range(30):
            await engine.route([RouteQuery(prompt=f"a caller's own threshold {i}", threshold=0.0)])
        scorer = engine.describe().scorers[0]
        fresh = (await engine.route([RouteQuery(prompt="hi", strong_share=0.5)]))[0]
    assert scorer.live_samples == 1 and not scorer.live_thresholds  # one distinct prompt: still warming up
    assert not fresh.routed_strong
