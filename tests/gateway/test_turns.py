"""A tool loop stays on the model that started its turn (issue #24), through the gateway's OpenAI API."""

from __future__ import annotations

import json

import httpx

from gateway_service.server import build_gateway
from tests.gateway.conftest import STRONG, WEAK, Stack

TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}]


async def test_a_250_round_tool_loop_stays_on_one_model_and_leaves_a_fresh_hi_weak(stack: Stack) -> None:
    """The loop switched models halfway (the live threshold moved under it), and its 250 identical last user
    messages dragged the live threshold down until a fresh "hi" went strong."""
    stack.ollama.tool_call = ("lookup", "{}")
    limits = stack.gateway.settings.limits.model_copy(update={"max_messages": 1000})
    gateway = await build_gateway(stack.gateway.settings.model_copy(update={"limits": limits}))
    url = f"http://127.0.0.1:{gateway.http_port}/v1/chat/completions"
    messages: list[dict[str, object]] = [{"role": "user", "content": "Prove that there are infinitely many primes, "
                                                                      "looking up what you need."}]
    models, rules = [], []
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            for round_ in range(250):
                answer = await http.post(url, json={"model": "router", "messages": messages, "tools": TOOLS})
                assert answer.status_code == 200, answer.text
                models.append(answer.headers["x-route-model"])
                rules.append(answer.headers.get("x-route-rule", ""))
                call = answer.json()["choices"][0]["message"]["tool_calls"][0]
                messages += [{"role": "assistant", "content": None, "tool_calls": [call]},
                             {"role": "tool", "tool_call_id": call["id"], "content": json.dumps({"round": round_})}]
            fresh = await http.post(url, json={"model": "router", "messages": [{"role": "user", "content": "hi"}]})
    finally:
        await gateway.stop()
    assert len(set(models)) == 1 and models[0] in (STRONG, WEAK), set(models)
    assert rules[0] == "" and set(rules[1:]) == {"turn"}  # routed once, then the turn's model
    assert fresh.headers["x-route-model"] == WEAK


async def test_gateway_rules_decide_by_max_tokens_header_or_metadata_before_the_router(stack: Stack) -> None:
    from gateway_service.config import RuleSettings

    rules = (
        RuleSettings(name="short", model=WEAK, max_tokens_below=64),
        RuleSettings(name="tasks", model=WEAK, header="x-client-task"),
        RuleSettings(name="tagged", model=STRONG, metadata="tier=premium"),
    )
    gateway = await build_gateway(stack.gateway.settings.model_copy(update={"rules": rules}))
    url = f"http://127.0.0.1:{gateway.http_port}/v1/chat/completions"
    proof = [{"role": "user", "content": "Prove that there are infinitely many primes."}]
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            short = await http.post(url, json={"model": "router", "messages": proof, "max_tokens": 20})
            task = await http.post(url, json={"model": "router", "messages": proof}, headers={"x-client-task": "title"})
            tagged = await http.post(url, json={"model": "router", "messages": [{"role": "user", "content": "hi"}],
                                                "metadata": {"tier": "Premium"}})
            concrete = await http.post(url, json={"model": STRONG, "messages": proof, "max_tokens": 20})
    finally:
        await gateway.stop()
    assert [(a.headers["x-route-model"], a.headers.get("x-route-rule")) for a in (short, task, tagged)] == [
        (WEAK, "short"), (WEAK, "tasks"), (STRONG, "tagged")]
    assert concrete.headers["x-route-model"] == STRONG and "x-route-rule" not in concrete.headers  # only routed requests


async def test_the_route_endpoint_gives_the_decision_without_calling_any_llm(stack: Stack) -> None:
    """POST /v1/route: what a chat request would get, for HTTP clients that want the decision, not the completion."""
    url = f"http://127.0.0.1:{stack.gateway.http_port}/v1/route"
    def chats() -> int:
        return sum("chat" in r["path"] for r in [*stack.ollama.requests, *stack.openai.requests])

    sent = chats()
    async with httpx.AsyncClient(timeout=30) as http:
        hi = await http.post(url, json={"model": "router", "messages": [{"role": "user", "content": "hi"}]})
        proof = await http.post(url, json={"model": "router-mf-50", "messages": [
            {"role": "user", "content": "Prove that there are infinitely many primes."}]})
        task = await http.post(url, json={"model": "router", "messages": [
            {"role": "user", "content": "### Task:\nGenerate a concise title for the chat history."}]})
        unknown = await http.post(url, json={"model": "nope", "messages": [{"role": "user", "content": "hi"}]})
    assert hi.status_code == proof.status_code == task.status_code == 200, hi.text
    assert (hi.json()["model"], hi.json()["routed_strong"]) == (WEAK, False) and hi.json()["score"] > 0
    assert proof.json()["model"] == STRONG and "score" in proof.json()["reason"]
    assert (task.json()["model"], task.json()["rule"]) == (WEAK, "client-utility")
    assert unknown.status_code == 404 and "nope" in unknown.json()["error"]["message"]
    assert chats() == sent  # no upstream was asked
