"""The dashboards are not dead: Debian's real Prometheus scrapes a running router and gateway under a short
scripted load, and every panel query of deploy/monitoring/dashboards answers with data through Prometheus's
HTTP API. A renamed metric, label or a typo in a query fails here.

The load touches what the panels show: routed and named completions over both APIs (one upstream with a
dead host beside a live one: retries and an ejection; one with only a dead host: upstream errors), a bad
request, callers with policies (a share, a strong budget that runs out, a rate limit that refuses), prices
(spend and savings), a client utility task (a rule decision), a shadow scorer, an invalid Route call.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml

from gateway_service.__main__ import main as gateway_cli
from gateway_service.server import GatewayApp, build_gateway
from router_service.config import BUNDLED_SCORERS
from router_service.server import RouterApp, build_router
from routing_api.router.v1 import router_pb2, router_pb2_grpc
from tests.conftest import closed_port, router_settings
from tests.deploy.monitoring import DASHBOARDS, MONITORING, Query, dashboard, evaluable, queries
from tests.deploy.render_dashboard import render_dashboard
from tests.gateway.conftest import STRONG, WEAK, gateway_settings
from tests.http_servers import serve_app
from tests.llm_servers import LLMServerState, llm_app
from tests.pictures import keep_picture, picture_folder

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason="needs prometheus (Debian's package; .ci/run installs it)")

SCRAPE_TOKEN = "prom-scrape-token-0001"  # the gateway's server.metrics_token, as Prometheus sends it
KEYS = {"web": "sk-web-000000000001", "batch": "sk-batch-0000000001", "ops": "sk-ops-00000000001"}
CALLERS = [
    {"name": "web", "api_keys": [KEYS["web"]], "policy": "interactive"},
    {"name": "batch", "api_keys": [KEYS["batch"]], "policy": "offline"},
    {"name": "ops", "api_keys": [KEYS["ops"]], "admin": True},
]
POLICIES = [
    {"name": "interactive", "strong_share": 0.5, "strong_calls": 1000},
    {"name": "offline", "strong_share": 0.3, "strong_calls": 2, "requests_per_minute": 12},
]
PRICES = [
    {"model": STRONG, "input_per_million": 3.0, "output_per_million": 15.0},
    {"model": WEAK, "input_per_million": 0.1, "output_per_million": 0.4},
]
PROMPTS = [
    "What is 2 + 2?", "Say hello.", "Translate 'good morning' into French.",
    "Prove that there are infinitely many primes, then generalise the argument to primes of the form 4k+3.",
    "Write a Python function that merges overlapping intervals and explain its complexity.",
    "Explain the difference between TCP and UDP for a network engineering interview.",
    "Summarise the causes of the First World War in three paragraphs.", "What colour is the sky?",
    "Design a rate limiter for a distributed API gateway; discuss consistency trade-offs.",
    "Name a fruit.",
]
INDEXER_KEY, GATEWAY_KEY = "sk-indexer-00000001", "sk-gateway-00000001"
TASK = "### Task:\nGenerate a concise, 3-5 word title with an emoji summarizing the chat history.\n### Chat History:\nhi"


@dataclass
class Monitored:
    router: RouterApp
    gateway: GatewayApp
    prometheus_url: str
    dead_host: str  # the Ollama upstream's second host: nothing listens there
    load_started: float = 0.0

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway.http_port}"


async def wait_for(condition: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if await condition():
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


async def instant(client: httpx.AsyncClient, base: str, expr: str) -> list[dict[str, Any]]:
    response = await client.get(f"{base}/api/v1/query", params={"query": expr})
    body = response.json()
    assert response.status_code == 200 and body["status"] == "success", f"{expr}: {body.get('error', body)}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


@pytest.fixture
async def monitored(tmp_path: Path) -> AsyncIterator[Monitored]:
    router = await build_router(router_settings(
        server={"host": "127.0.0.1", "port": 0, "metrics_port": 0},
        scorers=[{"name": "difficulty"}, {"name": "mf", "path": BUNDLED_SCORERS["mf"]["local"], "shadow_of": "difficulty"}],
        routing={"strong_budget": 1000, "live_window": 200, "live_warmup": 5},
        callers=[  # the gateway, and a service calling Route itself
            {"name": "gateway", "api_keys": [GATEWAY_KEY]}, {"name": "indexer", "api_keys": [INDEXER_KEY], "policy": "fixed"},
        ],
        caller_policies=[{"name": "fixed", "may_choose": False}],
    ))
    ollama = LLMServerState(chunk_delay_s=0.002)
    try:
        async with serve_app(llm_app(ollama)) as ollama_url:
            dead = f"http://127.0.0.1:{closed_port()}"
            settings = gateway_settings(
                router.port, ollama_url, "unused", callers=CALLERS,
                server={"host": "127.0.0.1", "http_port": 0, "grpc_port": 0, "grace_s": 5, "metrics_token": SCRAPE_TOKEN},
                router={"address": f"127.0.0.1:{router.port}", "timeout_s": 2.0, "token": GATEWAY_KEY}, caller_policies=POLICIES, prices=PRICES,
                upstreams=[
                    {"name": "ollama", "provider": "ollama", "base_urls": [ollama_url, dead],
                     "models": [STRONG, WEAK], "eject_after": 1},
                    {"name": "openai", "provider": "openai", "base_url": f"http://127.0.0.1:{closed_port()}/v1",
                     "models": ["gpt-4o-mini"]},
                ],
            )
            gateway = await build_gateway(settings)
            port = closed_port()
            (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(MONITORING / "alerts.yml")],
                "scrape_configs": [
                    {"job_name": "router", "static_configs": [{"targets": [f"127.0.0.1:{router.metrics_port}"]}]},
                    {"job_name": "gateway", "static_configs": [{"targets": [f"127.0.0.1:{gateway.http_port}"]}],
                     "authorization": {"type": "Bearer", "credentials": SCRAPE_TOKEN}},  # /metrics with callers: closed
                ],
            }))
            assert PROMETHEUS is not None
            with (tmp_path / "prometheus.log").open("wb") as log:
                prometheus = subprocess.Popen(
                    [PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
                     f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}",
                     "--log.level=warn"],
                    stdout=subprocess.DEVNULL, stderr=log,
                )
            try:
                base = f"http://127.0.0.1:{port}"
                async with httpx.AsyncClient(timeout=5) as client:
                    async def both_up() -> bool:
                        assert prometheus.poll() is None, (tmp_path / "prometheus.log").read_text()
                        if (await client.get(f"{base}/-/ready")).status_code != 200:  # its API answers 503 till then
                            return False
                        up = await instant(client, base, "up == 1")
                        return {r["metric"]["job"] for r in up} == {"router", "gateway"}

                    await wait_for(both_up, "Prometheus to scrape the router and the gateway")
                yield Monitored(router, gateway, base, dead)
            finally:
                prometheus.terminate()
                prometheus.wait(timeout=20)
                await gateway.stop()
    finally:
        await router.stop()


def chat(model: str, prompt: str, stream: bool = True) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": prompt}], "stream": stream}


async def scripted_load(stack: Monitored) -> None:
    """Every kind of traffic the panels draw (see the module's docstring)."""
    url = stack.gateway_url
    web, batch, ops = ({"authorization": f"Bearer {KEYS[k]}"} for k in ("web", "batch", "ops"))
    async with httpx.AsyncClient(timeout=30) as client:
        for round_ in range(3):
            for i, prompt in enumerate(PROMPTS):
                asked = f"{prompt} (round {round_})"
                answered = await client.post(f"{url}/v1/chat/completions", json=chat("router", asked), headers=web)
                assert answered.status_code == 200, answered.text
                if i % 3 == 0:  # the Ollama API too, and a concrete model
                    answered = await client.post(f"{url}/api/chat", json=chat(WEAK, asked, stream=False), headers=web)
                    assert answered.status_code == 200, answered.text
        statuses = [
            (await client.post(f"{url}/v1/chat/completions", json=chat("router", f"{p} (batch)"), headers=batch)).status_code
            for p in PROMPTS + PROMPTS[:4]
        ]
        assert statuses.count(200) == 12 and statuses.count(429) == 2, statuses  # requests_per_minute = 12
        task = await client.post(f"{url}/v1/chat/completions", json=chat("router", TASK), headers=web)
        assert task.status_code == 200 and task.headers["x-route-rule"] == "client-utility"
        unreachable = await client.post(f"{url}/v1/chat/completions", json=chat("gpt-4o-mini", "hi"), headers=web)
        assert unreachable.status_code == 200 and unreachable.headers["x-route-model"] == WEAK  # the fallback model
        bad = await client.post(f"{url}/v1/chat/completions", json={"model": "router"}, headers=web)
        assert bad.status_code == 400
        routed = await client.post(f"{url}/v1/route", json=chat("router", "hello"), headers=web)
        assert routed.status_code == 200
        assert (await client.get(f"{url}/v1/spend", headers=ops)).status_code == 200
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.router.port}") as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Route(router_pb2.RouteRequest(prompt="hi", strong_share=2.0), timeout=10, metadata=(
                ("authorization", f"Bearer {GATEWAY_KEY}"),
            ))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        indexer = (("authorization", f"Bearer {INDEXER_KEY}"),)
        assert (await stub.Route(router_pb2.RouteRequest(prompt="hi"), timeout=10, metadata=indexer)).model
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await stub.Route(router_pb2.RouteRequest(prompt="hi", strong_share=0.9), timeout=10, metadata=indexer)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def evaluate_every_query(stack: Monitored) -> dict[Query, list[dict[str, Any]]]:
    async with httpx.AsyncClient(timeout=10) as client:
        done = time.time()

        async def scraped_since_load() -> bool:  # two scrapes of each after the load's last request
            stamps = await instant(client, stack.prometheus_url, "timestamp(up)")
            return len(stamps) == 2 and all(float(s["value"][1]) > done + 1 for s in stamps)

        await wait_for(scraped_since_load, "Prometheus to scrape both services after the load")
        span = f"{math.ceil(time.time() - stack.load_started) + 5}s"
        return {
            query: await instant(client, stack.prometheus_url, evaluable(query.expr, rate_interval=span, dashboard_range=span))
            for query in queries()
        }


@pytest.mark.timeout(420)  # 25 s in the suite; with ROUTESTACK_SCREENSHOTS, the steady load's minutes more
async def test_every_panel_query_returns_data_from_a_live_stack(monitored: Monitored, tmp_path: Path) -> None:
    monitored.load_started = time.time()
    await scripted_load(monitored)
    answers = await evaluate_every_query(monitored)
    empty = [str(q) for q, result in answers.items() if not result]
    assert not empty, f"panel queries with no data: {empty}"
    # ... and data with a value: NaN would draw nothing (a ratio of nothing to nothing, a gauge never set)
    valueless = [str(q) for q, result in answers.items() if not any(math.isfinite(float(r["value"][1])) for r in result)]
    assert not valueless, f"panel queries with only NaN: {valueless}"
    by_title = {q.panel + "/" + q.ref: result for q, result in answers.items()}
    hosts = {r["metric"]["host"]: float(r["value"][1]) for r in by_title["Hosts up/A"]}
    assert sorted(hosts.values()) == [0.0, 1.0, 1.0]  # the dead Ollama host ejected; the live one and OpenAI's not yet
    saved = {r["metric"].get("caller"): float(r["value"][1]) for r in by_title["Saved by routing, by caller/A"]}
    assert saved["web"] > 0 and saved["batch"] > 0  # routing sent some of each caller's requests weak
    refusals = {(r["metric"]["caller"], r["metric"]["limit"]) for r in by_title["Refusals by caller and limit/A"]}
    assert ("batch", "requests_per_minute") in refusals
    budget = {r["metric"].get("caller"): float(r["value"][1]) for r in by_title["Strong budget left/B"]}
    assert budget["batch"] == 0 and budget["web"] > 900
    await check_the_savings_report(monitored, tmp_path)
    await check_the_alerting_rules(monitored)
    # the picture in README: the dashboard drawn from this run; ROUTESTACK_SCREENSHOTS=DIR keeps it, after a
    # steady load of ROUTESTACK_STEADY_S seconds (default 90) so that the lines have a shape
    if picture_folder() is not None:
        await steady_load(monitored, float(os.environ.get("ROUTESTACK_STEADY_S", "90")))
    drawn = tmp_path / "dashboard.png"
    await render_dashboard(dashboard(DASHBOARDS[0]), monitored.prometheus_url, monitored.load_started, time.time(), drawn)
    assert drawn.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    keep_picture("dashboard.png", drawn.read_bytes())


async def steady_load(stack: Monitored, seconds: float) -> None:
    """A few requests a second from both callers, over both APIs, for the picture (nothing asserted on it)."""
    url, deadline, i = stack.gateway_url, time.monotonic() + seconds, 0
    async with httpx.AsyncClient(timeout=30) as client:
        while time.monotonic() < deadline:
            who = "batch" if i % 6 == 0 else "web"
            path, body = (("/api/chat", chat(WEAK, PROMPTS[i % len(PROMPTS)], stream=False)) if i % 5 == 0
                          else ("/v1/chat/completions", chat("router", f"{PROMPTS[i % len(PROMPTS)]} (steady {i})")))
            await client.post(f"{url}{path}", json=body, headers={"authorization": f"Bearer {KEYS[who]}"})
            await asyncio.sleep(0.25)
            i += 1
    await asyncio.sleep(3)  # scraped


async def check_the_alerting_rules(stack: Monitored) -> None:
    """The shipped alerting rules on the live stack: each evaluates, each metric it names exists (a renamed
    metric fails here), and the dead Ollama host is already a pending RoutestackUpstreamHostDown."""
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"][0]["rules"]
    named = {m for rule in rules for m in re.findall(r"\b(?:gateway|router)_[a-z_]+\b", rule["expr"])}
    async with httpx.AsyncClient(timeout=10) as client:
        exported = set((await client.get(f"{stack.prometheus_url}/api/v1/label/__name__/values")).json()["data"])

        async def evaluated() -> bool:
            groups = (await client.get(f"{stack.prometheus_url}/api/v1/rules")).json()["data"]["groups"]
            loaded = [rule for group in groups for rule in group["rules"]]
            return len(loaded) == len(rules) and all(r["health"] == "ok" for r in loaded)

        await wait_for(evaluated, "Prometheus to evaluate every alerting rule")
        alerts = (await client.get(f"{stack.prometheus_url}/api/v1/alerts")).json()["data"]["alerts"]
    assert not named - exported, f"alerting rules name metrics no service exports: {sorted(named - exported)}"
    down = {(a["labels"]["host"], a["state"]) for a in alerts if a["labels"]["alertname"] == "RoutestackUpstreamHostDown"}
    assert (stack.dead_host, "pending") in down, alerts


async def check_the_savings_report(stack: Monitored, tmp_path: Path) -> None:
    """`gateway-service report` on this run's GET /v1/spend: its figures are those of the counters the
    spend panels draw, per caller, to the rounding of nano-dollars."""
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.get(f"{stack.gateway_url}/v1/spend", headers={"authorization": f"Bearer {KEYS['ops']}"})
        counted = {
            name: {r["metric"]["caller"]: float(r["value"][1]) for r in await instant(client, stack.prometheus_url, f"sum by (caller) ({name})")}
            for name in ("gateway_spend_baseline_usd_total", "gateway_routed_spend_usd_total")
        }
    spend = answer.json()
    for caller in ("web", "batch"):
        figures = spend["callers"][caller]
        assert figures["baseline_usd"] == pytest.approx(counted["gateway_spend_baseline_usd_total"][caller], abs=1e-8)
        assert figures["routed_spend_usd"] == pytest.approx(counted["gateway_routed_spend_usd_total"][caller], abs=1e-8)
        assert figures["saved_usd"] > 0
    saved = tmp_path / "spend.json"
    saved.write_text(json.dumps(spend))
    assert gateway_cli(["report", "--from", str(saved), "--out", str(tmp_path / "report")]) == 0
    markdown = (tmp_path / "report" / "savings.md").read_text()
    web = spend["callers"]["web"]
    assert f"| web | {web['requests']} | {web['routed']} | {web['strong'] / web['routed']:.1%} |" in markdown
    today = spend["days"][0]["day"]
    assert f"| {today} |" in markdown and f"| {today} web |" in markdown
    assert (tmp_path / "report" / "savings.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    keep_picture("savings.png", (tmp_path / "report" / "savings.png").read_bytes())
