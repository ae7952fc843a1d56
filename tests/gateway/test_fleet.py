"""Many replicas, one Redis: budgets that hold across three gateways and two routers, a restarted replica that does
not refill them, and a Redis killed mid-load (every request answered, flagged while it was gone, spend whole)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from gateway_service.server import GatewayApp, build_gateway
from router_service.server import RouterApp, build_router
from tests.conftest import router_settings
from tests.gateway.conftest import STRONG, gateway_settings
from tests.http_servers import serve_app
from tests.llm_servers import LLMServerState, llm_app
from tests.redis_server import redis_server

TEAMS = ("search", "support", "batch")
KEYS = {team: f"sk-{team}-key-000001" for team in TEAMS}
FAST_REDIS = {"timeout_ms": 1000, "retry_s": 0.2}  # a deadline a loaded CI machine meets; a kill is refused at once


@dataclass
class Fleet:
    gateways: list[GatewayApp]
    routers: list[RouterApp]
    settings: list[Any]

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.gateways[i % len(self.gateways)].http_port}"

    async def restart(self, i: int) -> None:
        await self.gateways[i].stop()
        self.gateways[i] = await build_gateway(self.settings[i])


@asynccontextmanager
async def fleet(redis_url: str | None, policy: dict[str, Any], router_budget: int | None = None) -> AsyncIterator[Fleet]:
    redis = {"url": redis_url, **FAST_REDIS} if redis_url else {}
    async with AsyncExitStack() as stack:
        routing: dict[str, Any] = {"live_share": False}
        if router_budget is not None:
            routing |= {"strong_budget": router_budget, "budget_window_s": 60}
        routers = []
        for _ in range(2):
            router = await build_router(router_settings(embedder={"backend": "static"}, routing=routing, redis=redis))
            stack.push_async_callback(router.stop)
            routers.append(router)
        ollama_url = await stack.enter_async_context(serve_app(llm_app(LLMServerState())))
        openai_url = await stack.enter_async_context(serve_app(llm_app(LLMServerState())))
        callers = [{"name": team, "api_keys": [KEYS[team]], "policy": "teams"} for team in TEAMS]
        settings = [
            gateway_settings(
                routers[i % 2].port, ollama_url, openai_url, callers=callers, caller_policies=[{"name": "teams", **policy}],
                redis=redis, prices=[{"model": STRONG, "input_per_million": 3, "output_per_million": 15}],
            )
            for i in range(3)
        ]
        running = Fleet([await build_gateway(s) for s in settings], routers, settings)
        try:
            yield running
        finally:
            for gateway in running.gateways:
                await gateway.stop()


async def load(running: Fleet, per_team: int, client: httpx.AsyncClient, start: int = 0) -> list[tuple[str, httpx.Response]]:
    """``per_team`` requests from each team, spread round-robin over the gateways, 12 at a time."""
    gate = asyncio.Semaphore(12)

    async def one(team: str, n: int) -> tuple[str, httpx.Response]:
        body = {"model": "router", "messages": [{"role": "user", "content": f"{team} question {start + n}"}]}
        async with gate:
            answer = await client.post(
                f"{running.url(n)}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {KEYS[team]}"}
            )
        return team, answer

    return list(await asyncio.gather(*(one(team, n) for n in range(per_team) for team in TEAMS)))


def strong(answers: list[tuple[str, httpx.Response]], team: str | None = None) -> int:
    return sum(r.headers.get("x-route-model") == STRONG for t, r in answers if team in (None, t))


async def test_a_fleet_budget_holds_across_two_routers_only_with_redis(tmp_path: Path) -> None:
    """Every request wants the strong model (threshold 0); the routers' budget is 100 strong calls a minute."""
    everyone_strong = {"threshold": 0.0}
    async with httpx.AsyncClient(timeout=30) as client:
        with redis_server(tmp_path) as redis:
            async with fleet(redis.url, everyone_strong, router_budget=100) as shared:
                answers = await load(shared, 60, client)
        async with fleet(None, everyone_strong, router_budget=100) as apart:
            separate = await load(apart, 60, client)
    assert all(r.status_code == 200 for _, r in answers + separate)
    assert strong(answers) == 100  # 180 asked, in the window: the fleet's 100 (<= 102 asked for)
    assert sum(r.headers["x-route-budget-limited"] == "true" for _, r in answers) == 80
    # Without Redis each router has its own 100: the one behind two of the three gateways made 100 of its 120, the
    # other all its 60. The fleet's budget became 200.
    assert strong(separate) == 160


async def test_caller_budgets_hold_across_three_gateways_and_a_restart(tmp_path: Path) -> None:
    budget = {"threshold": 0.0, "strong_calls": 20, "budget_window_s": 60}
    async with httpx.AsyncClient(timeout=30) as client:
        with redis_server(tmp_path) as redis:
            async with fleet(redis.url, budget) as shared:
                first = await load(shared, 15, client)
                await shared.restart(1)  # a replica restarted mid-run: its budget is Redis's, not refilled
                second = await load(shared, 15, client, start=100)
        async with fleet(None, budget) as apart:
            separate = await load(apart, 30, client)
    for team in TEAMS:
        assert strong(first, team) == 15
        assert strong(first + second, team) == 20  # 30 asked through three gateways and a restart: its 20
        assert strong(separate, team) == 30  # without Redis each gateway has its own 20: 60 a team allowed
    flagged = [r for _, r in second if r.headers["x-route-model"] != STRONG]
    assert len(flagged) == 30 and all(r.headers["x-route-budget-limited"] == "true" for r in flagged)


async def test_redis_killed_mid_load_every_request_answered_and_spend_whole(tmp_path: Path) -> None:
    budget = {"threshold": 0.0, "strong_calls": 1000, "budget_window_s": 60, "requests_per_minute": 1000}
    async with httpx.AsyncClient(timeout=30) as client:
        with redis_server(tmp_path, persist=True) as redis:
            async with fleet(redis.url, budget) as running:
                before = await load(running, 10, client)
                redis.kill()
                during = await load(running, 10, client, start=100)
                redis.start()
                await asyncio.sleep(0.3)  # past redis.retry_s
                after = await load(running, 10, client, start=200)
                await asyncio.sleep(0.6)  # the spend flushers' next round (every 0.25 s)
                report = (await client.get(f"{running.url(0)}/v1/spend", headers={"authorization": f"Bearer {KEYS['search']}"}))
                admin_less = report.status_code
                totals = await spend_of(running, client)
    assert all(r.status_code == 200 for _, r in before + during + after)  # never a lost request
    unenforced_after = [r for _, r in after if "x-route-budget-unenforced" in r.headers]
    assert not any("x-route-budget-unenforced" in r.headers for _, r in before) and not unenforced_after
    assert all(r.headers["x-route-budget-unenforced"] == "true" for _, r in during)  # flagged while it was gone
    assert admin_less == 403
    assert totals["scope"] == "fleet"
    for team in TEAMS:  # each team's 30 answers, counted once: the spend kept while Redis was gone arrived after
        assert totals["callers"][team]["requests"] == 30, totals["callers"][team]
        assert totals["callers"][team]["strong"] == 30


async def spend_of(running: Fleet, client: httpx.AsyncClient) -> dict[str, Any]:
    """GET /v1/spend as an admin: a gateway without named admins lets none read it, so ask Redis through one
    that has the same Redis and an admin key."""
    settings = running.settings[0]
    admin = [*settings.callers, {"name": "ops", "api_keys": ["sk-ops-admin-00001"], "admin": True}]
    reader = await build_gateway(settings.model_copy(update={"callers": tuple(
        type(settings.callers[0]).model_validate(c) if isinstance(c, dict) else c for c in admin
    )}))
    try:
        answer = await client.get(
            f"http://127.0.0.1:{reader.http_port}/v1/spend", headers={"authorization": "Bearer sk-ops-admin-00001"}
        )
        return dict(answer.json())
    finally:
        await reader.stop()
