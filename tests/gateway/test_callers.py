"""Callers: a policy per API key, one caller's traffic never moving another's share or budget, limits that say who
and when, and exact spend (real router, real gateway, the Ollama-format test server on real sockets)."""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest

from gateway_service.accounting.report import spend_table
from gateway_service.server import GatewayApp, build_gateway
from router_service.server import RouterApp, build_router
from routing_api.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from tests.conftest import SHARED_DATA, router_settings
from tests.gateway.conftest import STRONG, WEAK, gateway_settings
from tests.http_servers import serve_app
from tests.llm_servers import LLMServerState, llm_app

KEYS = {"search": "sk-search-0000001", "flood": "sk-flood-00000001", "ops": "sk-ops-0000000001", "fixed": "sk-fixed-0000001"}
CALLERS = [
    {"name": "search", "api_keys": [KEYS["search"]], "policy": "teams"},
    {"name": "flood", "api_keys": [KEYS["flood"]], "policy": "teams"},
    {"name": "fixed", "api_keys": [KEYS["fixed"]], "policy": "fixed"},
    {"name": "ops", "api_keys": [KEYS["ops"]], "admin": True},
]
POLICIES = [
    {"name": "teams", "strong_calls": 30, "models": ["llama3.2:*"]},
    {"name": "fixed", "strong_share": 0.5, "may_choose": False, "requests_per_minute": 5},
]
PRICES = [
    {"model": STRONG, "input_per_million": 3.0, "output_per_million": 15.0},
    {"model": WEAK, "input_per_million": 0.1, "output_per_million": 0.4},
]


def mixed_prompts(n: int, skip: int = 0) -> list[str]:
    """Real prompts of mixed difficulty (MT-Bench and GSM8K, as RouteLLM evaluated on)."""
    prompts = []
    for name in ("routellm_mtbench", "routellm_gsm8k"):
        with gzip.open(SHARED_DATA / "eval" / f"{name}.jsonl.gz", "rt") as rows:
            prompts += list(dict.fromkeys(json.loads(line)["prompt"] for line in rows))[:n]
    return prompts[skip::2][: n - skip] if skip else prompts[::2][:n]


@dataclass
class Callers:
    gateway: GatewayApp
    router: RouterApp
    ollama: LLMServerState

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.gateway.http_port}"

    async def ask(self, client: httpx.AsyncClient, caller: str, path: str, **body: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {KEYS[caller]}"}
        return await client.post(f"{self.url}{path}", json=body, headers=headers)


@pytest.fixture
async def callers() -> AsyncIterator[Callers]:
    # A small live window, so a test can warm it up; the static embedder, so a thousand prompts take seconds.
    router = await build_router(router_settings(
        embedder={"backend": "static"}, routing={"live_window": 200, "live_warmup": 20},
    ))
    ollama = LLMServerState()
    try:
        async with serve_app(llm_app(ollama)) as ollama_url, serve_app(llm_app(LLMServerState())) as openai_url:
            gateway = await build_gateway(gateway_settings(
                router.port, ollama_url, openai_url, callers=CALLERS, caller_policies=POLICIES, prices=PRICES,
            ))
            try:
                yield Callers(gateway, router, ollama)
            finally:
                await gateway.stop()
    finally:
        await router.stop()


def chat(model: str, prompt: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": prompt}]}


async def test_one_caller_s_flood_leaves_another_caller_s_share_untouched(callers: Callers) -> None:
    """Measured before callers: 1,000 trivial prompts from one client moved another's share 75% -> 100%."""
    async with httpx.AsyncClient(timeout=30) as client:
        async def share(caller: str, prompts: list[str]) -> float:
            routed = [await callers.ask(client, caller, "/v1/route", **chat("router-mf-50", p)) for p in prompts]
            assert all(r.status_code == 200 for r in routed), routed[0].text
            return sum(r.json()["routed_strong"] for r in routed) / len(prompts)

        await share("search", mixed_prompts(30, skip=1))  # warms search's own window (20 prompts)
        measured = mixed_prompts(20)
        await share("search", measured)  # seen once: in search's window (a repeat is not observed again)
        before = await share("search", measured)
        trivial = [f"hi there, friend number {n}! thanks" for n in range(1000)]
        flood_share = await share("flood", trivial)
        after = await share("search", measured)
        flood_on_measured = await share("flood", measured)  # flood's window is all trivial prompts now
    assert abs(after - before) <= 0.05, (before, after)
    assert 0.3 <= flood_share <= 0.7  # flood gets its share of its own traffic
    # The flood did move a window, its own: measured against trivial traffic, most real prompts look hard.
    assert flood_on_measured >= before + 0.2, (before, flood_on_measured)


async def test_one_caller_s_strong_budget_is_its_own(callers: Callers) -> None:
    """Measured before callers: 27 trivial prompts as router-mf-0.0 emptied a strong budget of 30 for everyone."""
    async with httpx.AsyncClient(timeout=30) as client:
        spent = [await callers.ask(client, "flood", "/v1/chat/completions", **chat("router-mf-0.0", f"hi {n}"))
                 for n in range(33)]
        proofs = [await callers.ask(client, "search", "/v1/chat/completions",
                                    **chat("router-mf-0.0", f"Prove that {n} is not a sum of two squares."))
                  for n in range(3)]
        named = await callers.ask(client, "flood", "/v1/chat/completions", **chat(STRONG, "hi"))
    assert all(r.status_code == 200 for r in spent + proofs)
    flags = [r.headers["x-route-budget-limited"] for r in spent]
    assert flags == ["false"] * 30 + ["true"] * 3  # its own budget of 30, then weak, flagged
    assert all(r.headers["x-route-model"] == WEAK for r in spent[30:])
    assert [r.headers["x-route-model"] for r in proofs] == [STRONG] * 3  # another caller's budget: untouched
    assert all(r.headers["x-route-budget-limited"] == "false" for r in proofs)
    # Naming the strong model does not skip the policy: "teams" may name llama3.2:* only.
    assert named.status_code == 403
    assert named.json()["error"]["message"] == (
        "caller 'flood' may not name model 'llama3.1:8b' (its policy 'teams' allows: llama3.2:*); ask for 'router'"
    )
    assert named.json()["error"]["type"] == "permission_error"


async def test_limits_name_the_caller_and_when_they_free_on_both_apis(
    callers: Callers, caplog: pytest.LogCaptureFixture
) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        chosen = await callers.ask(client, "fixed", "/v1/chat/completions", **chat("router-mf-20", "hi"))
        with caplog.at_level(logging.INFO, logger="gateway_service.access"):
            answered = [await callers.ask(client, "fixed", "/v1/chat/completions", **chat("router", "hi"))
                        for _ in range(6)]
    assert chosen.status_code == 403
    assert "caller 'fixed' may not choose its own routing ('router-mf-20')" in chosen.json()["error"]["message"]
    assert [r.status_code for r in answered] == [200] * 5 + [429]  # a request refused by policy is not counted
    refused = answered[-1]
    message = refused.json()["error"]["message"]
    assert message.startswith("caller 'fixed' is past its limit: 5 requests in the last minute, requests_per_minute=5")
    assert 1 <= int(refused.headers["retry-after"]) <= 67 and f"frees in {refused.headers['retry-after']}s" in message
    lines = [json.loads(r.getMessage()) for r in caplog.records]
    assert {line["caller"] for line in lines} == {"fixed"}
    assert not any(KEYS["fixed"] in r.getMessage() for r in caplog.records)  # the name, never the key
    async with grpc.aio.insecure_channel(f"127.0.0.1:{callers.gateway.grpc_port}") as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        request = gateway_pb2.ChatRequest(model="router", messages=[gateway_pb2.ChatMessage(role="user", content="hi")])
        with pytest.raises(grpc.aio.AioRpcError) as exhausted:
            async for _ in stub.Chat(request, metadata=(("authorization", f"Bearer {KEYS['fixed']}"),)):
                pass
        request.model = STRONG
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            async for _ in stub.Chat(request, metadata=(("authorization", f"Bearer {KEYS['search']}"),)):
                pass
    assert exhausted.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "caller 'fixed' is past its limit" in (exhausted.value.details() or "")
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "caller 'search' may not name model 'llama3.1:8b'" in (denied.value.details() or "")


async def test_spend_and_the_all_strong_baseline_are_exact(callers: Callers) -> None:
    """The Ollama test server reports prompt_eval_count = words of the messages, eval_count = 4 chunks."""
    async with httpx.AsyncClient(timeout=30) as client:
        mix = [("router-mf-0.0", "one two three"), ("router-mf-1.0", "four five"), (WEAK, "six")]
        for model, prompt in mix:
            answered = await callers.ask(client, "search", "/v1/chat/completions", **chat(model, prompt))
            assert answered.status_code == 200, answered.text
        forbidden = await client.get(f"{callers.url}/v1/spend", headers={"authorization": f"Bearer {KEYS['search']}"})
        report = await client.get(f"{callers.url}/v1/spend", headers={"authorization": f"Bearer {KEYS['ops']}"})
        closed = await client.get(f"{callers.url}/metrics")  # with callers, /metrics is the admins' (or a token's)
        metrics = (await client.get(f"{callers.url}/metrics", headers={"authorization": f"Bearer {KEYS['ops']}"})).text
    assert closed.status_code == 401
    assert forbidden.status_code == 403 and "give it admin = true" in forbidden.json()["error"]["message"]
    assert report.status_code == 200, report.text
    search = report.json()["callers"]["search"]
    # strong, routed: 3 prompt + 4 completion tokens at $3 / $15 per million; weak, routed: 2 + 4 at $0.1 / $0.4;
    # weak, named: 1 + 4. The baseline: the two routed requests' tokens at the strong model's prices.
    strong, weak_routed, weak_named = 3 * 3 + 4 * 15, 2 * 0.1 + 4 * 0.4, 1 * 0.1 + 4 * 0.4
    assert search["requests"] == 3 and search["routed"] == 2 and search["strong"] == 1
    assert search["prompt_tokens"] == 6 and search["completion_tokens"] == 12 and search["estimated_requests"] == 0
    assert search["spend_usd"] == pytest.approx((strong + weak_routed + weak_named) / 1e6)
    assert search["routed_spend_usd"] == pytest.approx((strong + weak_routed) / 1e6)
    assert search["baseline_usd"] == pytest.approx((strong + 2 * 3 + 4 * 15) / 1e6)
    assert search["saved_usd"] == pytest.approx((2 * 3 + 4 * 15 - weak_routed) / 1e6)
    assert report.json()["scope"] == "process" and report.json()["baseline_model"] == STRONG
    assert f'gateway_spend_usd_total{{caller="search",model="{STRONG}"}} {strong / 1e6}' in metrics
    assert 'gateway_tokens_total{caller="search",kind="prompt",model="llama3.2:1b",source="upstream"} 3.0' in metrics
    table = spend_table(report.json())
    assert "| search | 3 | 2 | 50.0% |" in table and "the same tokens on llama3.1:8b" in table
