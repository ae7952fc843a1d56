"""Budgets that hold on every path (issue 36): the model that answers decides what is counted, however it was chosen.

A concrete strong model, a tool loop's continuation, a gateway rule, failing open: each strong answer
counts against the caller's strong budget, and a caller whose budget is spent gets the weak model, flagged,
never the strong one. Turns are the caller's own. Real router, real gateway, the Ollama-format test server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from gateway_service.server import build_gateway
from tests.conftest import closed_port
from tests.gateway.conftest import STRONG, WEAK, gateway_settings
from tests.http_servers import serve_app
from tests.llm_servers import LLMServerState, llm_app

KEY_A, KEY_B = "sk-team-a-000001", "sk-team-b-000001"
HARD = "Prove that there are infinitely many prime numbers, and then prove that the square root of 2 is irrational."
TOOLS: Any = [{"type": "function", "function": {"name": "run", "parameters": {"type": "object", "properties": {}}}}]


def settings(router_port: int, ollama_url: str, openai_url: str, strong_calls: int, **more: Any) -> Any:
    callers = [{"name": "team-a", "api_keys": [KEY_A], "policy": "small"},
               {"name": "team-b", "api_keys": [KEY_B], "policy": "small"}]
    policies = [{"name": "small", "strong_calls": strong_calls, "models": ["*"]}]
    return gateway_settings(router_port, ollama_url, openai_url, callers=callers, caller_policies=policies, **more)


@pytest.fixture
async def served(router_app) -> AsyncIterator[tuple[Any, LLMServerState]]:
    ollama = LLMServerState()
    async with serve_app(llm_app(ollama)) as ollama_url, serve_app(llm_app(LLMServerState())) as openai_url:
        gateway = await build_gateway(settings(router_app.port, ollama_url, openai_url, strong_calls=3,
                                               rules=[{"name": "vip", "model": STRONG, "header": "x-vip"}]))
        try:
            yield gateway, ollama
        finally:
            await gateway.stop()


async def chat(gateway: Any, key: str, messages: list[dict[str, Any]], model: str = "router", **more: Any) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(f"http://127.0.0.1:{gateway.http_port}/v1/chat/completions",
                               json={"model": model, "messages": messages, **more.pop("body", {})},
                               headers={"authorization": f"Bearer {key}", **more.pop("headers", {})})


def answered_by(responses: list[httpx.Response]) -> list[str]:
    return [r.headers["x-route-model"] for r in responses]


async def test_a_concrete_strong_model_is_counted(served: tuple[Any, LLMServerState]) -> None:
    gateway, _ = served
    named = [await chat(gateway, KEY_A, [{"role": "user", "content": "hi"}], model=STRONG) for _ in range(4)]
    assert [r.status_code for r in named] == [200, 200, 200, 429]  # strong_calls = 3, named ones included
    routed = await chat(gateway, KEY_A, [{"role": "user", "content": HARD}])
    assert routed.headers["x-route-model"] == WEAK and routed.headers["x-route-budget-limited"] == "true"
    other = await chat(gateway, KEY_B, [{"role": "user", "content": "hi"}], model=STRONG)
    assert other.status_code == 200  # team-b's budget is its own


async def test_a_tool_loop_s_strong_answers_are_counted_and_a_spent_caller_s_loop_goes_weak(
    served: tuple[Any, LLMServerState],
) -> None:
    """Each continuation answered by the strong model is a strong call; past the budget the loop goes weak, flagged."""
    gateway, _ = served
    conversation: list[dict[str, Any]] = [{"role": "user", "content": HARD}]
    first = await chat(gateway, KEY_A, conversation, body={"tools": TOOLS})
    assert first.headers["x-route-model"] == STRONG
    answers = [first]
    for i in range(5):
        conversation += [{"role": "assistant", "content": None, "tool_calls": [
            {"id": f"c{i}", "type": "function", "function": {"name": "run", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": f"c{i}", "content": f"step {i} done"}]
        answers.append(await chat(gateway, KEY_A, conversation, body={"tools": TOOLS}))
    assert answered_by(answers) == [STRONG, STRONG, STRONG, WEAK, WEAK, WEAK]
    assert [r.headers.get("x-route-rule") for r in answers[1:3]] == ["turn", "turn"]
    assert all(r.headers["x-route-budget-limited"] == "true" for r in answers[3:])


async def test_a_gateway_rule_to_the_strong_model_holds_the_budget(served: tuple[Any, LLMServerState]) -> None:
    gateway, _ = served
    vip = [await chat(gateway, KEY_A, [{"role": "user", "content": f"hi {i}"}], headers={"x-vip": "1"}) for i in range(5)]
    assert answered_by(vip) == [STRONG, STRONG, STRONG, WEAK, WEAK]
    assert [r.headers["x-route-rule"] for r in vip] == ["vip"] * 5 and vip[4].headers["x-route-budget-limited"] == "true"


async def test_turns_are_the_caller_s_own(served: tuple[Any, LLMServerState]) -> None:
    """team-b re-sending team-a's strong conversation with a tool result does not continue team-a's turn."""
    gateway, _ = served
    conversation: list[dict[str, Any]] = [{"role": "user", "content": HARD}]
    assert (await chat(gateway, KEY_A, conversation, body={"tools": TOOLS})).headers["x-route-model"] == STRONG
    conversation += [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "run", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "done"}]
    theirs = await chat(gateway, KEY_B, conversation, body={"tools": TOOLS})
    assert theirs.headers.get("x-route-rule") != "turn"
    mine = await chat(gateway, KEY_A, conversation, body={"tools": TOOLS})
    assert mine.headers.get("x-route-rule") == "turn"


async def test_failing_open_is_weak_for_a_spent_caller() -> None:
    """The router down: the fail-open model (the strong one by default) answers only within the caller's budget."""
    ollama = LLMServerState()
    async with serve_app(llm_app(ollama)) as ollama_url, serve_app(llm_app(LLMServerState())) as openai_url:
        gateway = await build_gateway(settings(closed_port(), ollama_url, openai_url, strong_calls=2))
        try:
            answers = [await chat(gateway, KEY_A, [{"role": "user", "content": f"hi {i}"}]) for i in range(4)]
        finally:
            await gateway.stop()
    assert all(r.headers["x-route-degraded"] == "true" for r in answers)
    assert answered_by(answers) == [STRONG, STRONG, WEAK, WEAK]


async def test_a_burst_past_redis_s_connection_pool_keeps_every_limit(router_app, tmp_path) -> None:
    """150 requests at once on Redis: each waits for a pooled connection; none is served unenforced, and the budget of
    one strong call holds (redis-py's default pool failed its 101st at once, which switched every limit off)."""
    import asyncio

    from tests.redis_server import redis_server

    ollama = LLMServerState()
    with redis_server(tmp_path) as redis:
        async with serve_app(llm_app(ollama)) as ollama_url, serve_app(llm_app(LLMServerState())) as openai_url:
            gateway = await build_gateway(settings(
                router_app.port, ollama_url, openai_url, strong_calls=1,
                redis={"url": redis.url, "timeout_ms": 2000, "max_connections": 16},
                limits={"max_streams_per_key": 1000},
            ))
            try:
                async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=200)) as http:
                    async def one(i: int) -> httpx.Response:
                        return await http.post(
                            f"http://127.0.0.1:{gateway.http_port}/v1/chat/completions",
                            json={"model": STRONG, "messages": [{"role": "user", "content": f"hi {i}"}]},
                            headers={"authorization": f"Bearer {KEY_A}"})

                    answers = await asyncio.gather(*(one(i) for i in range(150)))
            finally:
                await gateway.stop()
    statuses = [a.status_code for a in answers]
    assert statuses.count(200) == 1 and statuses.count(429) == 149, sorted(set(statuses))
    assert not [a for a in answers if a.headers.get("x-route-budget-unenforced")]


async def test_a_password_in_an_upstream_url_is_never_shown(router_app, caplog: pytest.LogCaptureFixture) -> None:
    """base_url = "http://user:pw@host": the password reaches the upstream (as Basic auth) and no answer, log line,
    metric or routing status (#36)."""
    import logging

    caplog.set_level(logging.INFO)
    secret = "s3cr3t-url-pw"
    dead = f"http://admin:{secret}@127.0.0.1:{closed_port()}"
    async with serve_app(llm_app(LLMServerState())) as openai_url:
        gateway = await build_gateway(gateway_settings(
            router_app.port, "unused", openai_url, fallback_model=None,
            upstreams=[{"name": "ollama", "provider": "ollama", "base_url": dead, "models": [STRONG, WEAK],
                        "health_interval_s": 0.05}],
        ))
        try:
            async with httpx.AsyncClient(timeout=30) as http:
                base = f"http://127.0.0.1:{gateway.http_port}"
                said = [await http.post(f"{base}/v1/chat/completions", json={"model": model, "messages": [
                    {"role": "user", "content": "hi"}]}) for model in (STRONG, WEAK, "router")]
                said.append(await http.post(f"{base}/v1/messages", json={"model": WEAK, "max_tokens": 9, "messages": [
                    {"role": "user", "content": "hi"}]}))
                said += [await http.get(f"{base}/v1/router"), await http.get(f"{base}/metrics")]
        finally:
            await gateway.stop()
    assert said[0].status_code == 502 and "127.0.0.1" in said[0].text  # the host is named, its password is not
    everything = "\n".join([*(r.text for r in said), *(str(v) for r in said for v in r.headers.values()),
                            *(r.getMessage() for r in caplog.records)])
    assert secret not in everything and "admin:" not in everything


async def test_a_dollar_budget_is_reserved_before_the_strong_call_starts(router_app) -> None:
    """Twelve slow strong calls at once against a dollar budget that holds three of their estimates: three go
    strong, the rest weak, flagged (before: the cost check took nothing until the end, and all twelve went strong)."""
    import asyncio
    import math

    prices = [{"model": STRONG, "input_per_million": 3.0, "output_per_million": 15.0}]
    estimate = (math.ceil(len("q00 prove it") / 4) * 3.0 + 100 * 15.0) / 1e6  # the prompt, and max_tokens of output
    ollama = LLMServerState(chunk_delay_s=0.5)
    async with serve_app(llm_app(ollama)) as ollama_url, serve_app(llm_app(LLMServerState())) as openai_url:
        config = settings(router_app.port, ollama_url, openai_url, strong_calls=100, prices=prices)
        policy = config.caller_policies[0].model_copy(update={"strong_cost_usd": 3.5 * estimate})
        gateway = await build_gateway(config.model_copy(update={"caller_policies": (policy,)}))
        try:
            answers = await asyncio.gather(*(chat(gateway, KEY_A, [{"role": "user", "content": f"q{i:02d} prove it"}],
                                                  model="router-mf-0.0", body={"max_tokens": 100}) for i in range(12)))
        finally:
            await gateway.stop()
    assert [a.status_code for a in answers] == [200] * 12
    assert answered_by(answers).count(STRONG) == 3
    assert all(a.headers["x-route-budget-limited"] == "true" for a in answers if a.headers["x-route-model"] == WEAK)


async def test_metrics_behind_a_token_answer_it_or_an_admin_caller_only(router_app, monkeypatch: pytest.MonkeyPatch) -> None:
    """server.metrics_token_env: /metrics names every caller and its spend, so it answers the token (Prometheus's
    bearer token) or an admin caller's key, nobody else."""
    monkeypatch.setenv("METRICS_TOKEN", "m-token-0001")
    callers = [{"name": "team-a", "api_keys": [KEY_A]}, {"name": "ops", "api_keys": ["sk-ops-000001"], "admin": True}]
    async with serve_app(llm_app(LLMServerState())) as ollama_url, serve_app(llm_app(LLMServerState())) as openai_url:
        config = gateway_settings(router_app.port, ollama_url, openai_url, callers=callers)
        server = config.server.model_copy(update={"metrics_token_env": "METRICS_TOKEN"})
        gateway = await build_gateway(config.model_copy(update={"server": server}))
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                url = f"http://127.0.0.1:{gateway.http_port}/metrics"
                answers = {name: (await http.get(url, headers={"authorization": f"Bearer {key}"} if key else {}))
                           for name, key in (("none", ""), ("team", KEY_A), ("admin", "sk-ops-000001"),
                                             ("token", "m-token-0001"))}
        finally:
            await gateway.stop()
    assert {name: r.status_code for name, r in answers.items()} == {"none": 401, "team": 401, "admin": 200, "token": 200}
    assert "metrics_token" in answers["none"].text and "gateway_requests_total" in answers["token"].text


async def test_one_caller_filling_its_turns_evicts_only_its_own() -> None:
    """Non-preview /v1/route calls could fill turns.max_turns and evict everyone's (#36): the bound is per caller."""
    from gateway_service.config import TurnSettings
    from gateway_service.routing.turns import TurnMemory

    turns = TurnMemory(TurnSettings(max_turns=100, max_turns_per_caller=10))
    await turns.remember("team-a", "a-turn", STRONG)
    for i in range(1000):
        await turns.remember("flood", f"turn-{i}", WEAK)
    assert await turns.model_of("team-a", "a-turn") == STRONG
    assert await turns.model_of("flood", "turn-0") is None and await turns.model_of("flood", "turn-999") == WEAK
    assert await turns.model_of("team-b", "a-turn") is None  # nor is it another caller's


async def test_with_redis_a_tool_loop_continues_on_another_replica(router_app, tmp_path) -> None:
    """[redis] set: the turn a request began on one gateway is continued by the next gateway behind the balancer."""
    from tests.redis_server import redis_server

    with redis_server(tmp_path) as redis:
        async with serve_app(llm_app(LLMServerState())) as ollama_url, serve_app(llm_app(LLMServerState())) as openai_url:
            config = settings(router_app.port, ollama_url, openai_url, strong_calls=100, redis={"url": redis.url})
            one, two = await build_gateway(config), await build_gateway(config)
            try:
                conversation: list[dict[str, Any]] = [{"role": "user", "content": HARD}]
                first = await chat(one, KEY_A, conversation, body={"tools": TOOLS})
                conversation += [{"role": "assistant", "content": None, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "run", "arguments": "{}"}}]},
                    {"role": "tool", "tool_call_id": "c1", "content": "done"}]
                second = await chat(two, KEY_A, conversation, body={"tools": TOOLS})
                theirs = await chat(two, KEY_B, conversation, body={"tools": TOOLS})
            finally:
                await one.stop()
                await two.stop()
    assert second.headers["x-route-rule"] == "turn" and second.headers["x-route-model"] == first.headers["x-route-model"]
    assert theirs.headers.get("x-route-rule") != "turn"


async def test_a_gateway_rule_picks_no_model_the_caller_may_not_name(router_app) -> None:
    """A header rule to the strong model does not apply to a caller whose policy keeps it to the weak models: the
    router decides for it as for any routed request (#36)."""
    async with serve_app(llm_app(LLMServerState())) as ollama_url, serve_app(llm_app(LLMServerState())) as openai_url:
        config = settings(router_app.port, ollama_url, openai_url, strong_calls=100,
                          rules=[{"name": "vip", "model": STRONG, "header": "x-vip"}])
        narrow = config.caller_policies[0].model_copy(update={"name": "narrow", "models": ("llama3.2:*",)})
        callers = [config.callers[0].model_copy(update={"policy": "narrow"}), config.callers[1]]
        gateway = await build_gateway(config.model_copy(update={"caller_policies": (*config.caller_policies, narrow),
                                                                "callers": tuple(callers)}))
        try:
            narrowed = await chat(gateway, KEY_A, [{"role": "user", "content": "hi"}], headers={"x-vip": "1"})
            other = await chat(gateway, KEY_B, [{"role": "user", "content": "hi"}], headers={"x-vip": "1"})
        finally:
            await gateway.stop()
    assert narrowed.headers.get("x-route-rule") != "vip" and narrowed.headers["x-route-model"] == WEAK
    assert other.headers["x-route-rule"] == "vip" and other.headers["x-route-model"] == STRONG


async def test_a_gateway_started_before_its_router_learns_the_strong_model(tmp_path) -> None:
    """The router comes up after the gateway (whose fail-open model here is the weak one): naming the strong model
    is still counted against the budget once the router answers (#36: it was never recognised)."""
    from router_service.server import build_router
    from tests.conftest import router_settings

    port = closed_port()
    async with serve_app(llm_app(LLMServerState())) as ollama_url, serve_app(llm_app(LLMServerState())) as openai_url:
        gateway = await build_gateway(settings(port, ollama_url, openai_url, strong_calls=1, default_model=WEAK))
        router = await build_router(router_settings(server={"host": "127.0.0.1", "port": port}))
        try:
            import asyncio

            async with httpx.AsyncClient(timeout=10) as http:
                for _ in range(100):  # until the gateway's channel has reconnected (its back-off after the failed start)
                    probe = await http.post(f"http://127.0.0.1:{gateway.http_port}/v1/route", json={
                        "model": "router", "preview": True, "messages": [{"role": "user", "content": "hi"}]},
                        headers={"authorization": f"Bearer {KEY_B}"})
                    assert probe.status_code == 200, probe.text
                    if not probe.json()["degraded"]:
                        break
                    await asyncio.sleep(0.1)
            await asyncio.sleep(1.1)  # past DESCRIBE_AGAIN_S since the last try
            named = [await chat(gateway, KEY_A, [{"role": "user", "content": "hi"}], model=STRONG) for _ in range(2)]
        finally:
            await router.stop()
            await gateway.stop()
    assert [r.status_code for r in named] == [200, 429]


async def test_cost_spent_while_redis_was_away_reaches_its_counter(tmp_path) -> None:
    """A strong call's cost settled while Redis does not answer is kept and sent when it answers (#36: it was
    dropped, so the caller's dollar budget never saw it)."""
    from gateway_service.accounting.policy import Caller
    from gateway_service.accounting.spend import SpendBook, Usage
    from gateway_service.config import CallerPolicySettings
    from gateway_service.metrics import GatewayMetrics
    from service_core.quota import Counters
    from tests.redis_server import redis_server

    with redis_server(tmp_path) as redis:
        config = settings(closed_port(), "http://127.0.0.1:1", "http://127.0.0.1:1", strong_calls=10,
                          redis={"url": redis.url, "timeout_ms": 100, "retry_s": 0.1},
                          prices=[{"model": STRONG, "input_per_million": 3.0, "output_per_million": 15.0}])
        counters = Counters(config.redis)
        book = SpendBook(config, counters, GatewayMetrics(), [STRONG, WEAK])
        policy = CallerPolicySettings(name="p", strong_cost_usd=1.0)
        try:
            redis.pause()
            book.record(Caller("team-a", policy), STRONG, Usage(1000, 1000, estimated=False), routed=True, strong=True)
            await book.flush()  # Redis stopped: the count waits
            redis.resume()
            import asyncio

            await asyncio.sleep(0.2)  # past retry_s
            await book.flush()
            counted = await counters.take("gw:cost:team-a", 0, None, policy.budget_window_s)
        finally:
            redis.resume()
            await counters.aclose()
    assert counted.enforced and counted.used == 18_000_000  # 1,000 tokens at $3 and 1,000 at $15 a million, in n$
