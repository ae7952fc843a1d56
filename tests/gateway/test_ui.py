"""The routing page (GET /ui) in a real headless browser (Debian's chromium), and the endpoints it calls.

Chromium opens the page as a person would, with the API key as the Basic-auth password; a prompt is typed
and Route clicked; the page routes it through each of the router's serving scorers (POST /v1/route as a
preview, no LLM called) and shows what GET /v1/router says (thresholds, the share, the hosts: one of them
dead and ejected). The page must show the same decisions the endpoint gives. With ROUTESTACK_SCREENSHOTS=DIR the screenshot is
also written there (README's docs/images/routing-page.png comes from this test).
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway_service.server import GatewayApp, build_gateway
from router_service.config import BUNDLED_SCORERS
from router_service.server import RouterApp, build_router
from tests.browser import CHROMIUM, open_tab
from tests.conftest import closed_port, router_settings
from tests.gateway.conftest import STRONG, WEAK, gateway_settings
from tests.http_servers import serve_app
from tests.llm_servers import LLMServerState, llm_app
from tests.pictures import keep_picture

OPS, WEB = "sk-ops-ui-0000000001", "sk-web-ui-0000000001"
TRAFFIC = ["What is 2 + 2?", "Name a fruit.", "Write a Python function that merges overlapping intervals.",
           "Design a rate limiter for a distributed API gateway.", "Say hello.", "Explain TCP versus UDP."]
PROMPT = "Prove that there are infinitely many primes, then generalise the argument to primes of the form 4k+3."


@dataclass
class Page:
    gateway: GatewayApp
    router: RouterApp
    live_host: str
    dead_host: str  # ejected by the health check, or by the first request it fails

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.gateway.http_port}"


@pytest.fixture
async def page_stack() -> AsyncIterator[Page]:
    router = await build_router(router_settings(
        server={"host": "127.0.0.1", "port": 0, "metrics_port": 0},
        scorers=[{"name": "difficulty"}, {"name": "mf", "path": BUNDLED_SCORERS["mf"]["local"]}],
    ))
    try:
        async with serve_app(llm_app(LLMServerState())) as ollama_url:
            dead = f"http://127.0.0.1:{closed_port()}"
            gateway = await build_gateway(gateway_settings(
                router.port, ollama_url, "unused",
                callers=[{"name": "ops", "api_keys": [OPS], "admin": True, "policy": "interactive"},
                         {"name": "web", "api_keys": [WEB], "policy": "interactive"}],
                caller_policies=[{"name": "interactive", "strong_share": 0.5}],
                upstreams=[{"name": "ollama", "provider": "ollama", "base_urls": [ollama_url, dead],
                            "models": [STRONG, WEAK], "eject_after": 1, "eject_base_s": 60}],
            ))
            try:
                yield Page(gateway, router, ollama_url, dead)
            finally:
                await gateway.stop()
    finally:
        await router.stop()


def basic(user: str, key: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{key}".encode()).decode()}


async def test_the_page_is_behind_the_same_auth(page_stack: Page) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        refused = await client.get(f"{page_stack.url}/ui")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Basic ")  # a browser asks for the key
        assert "API key as password" in refused.text
        wrong = await client.get(f"{page_stack.url}/ui", headers=basic("me", "sk-wrong"))
        assert wrong.status_code == 401
        page = await client.get(f"{page_stack.url}/ui", headers=basic("me", WEB))
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        policy = dict(d.strip().split(" ", 1) for d in page.headers["content-security-policy"].split(";"))
        assert policy["connect-src"] == "'self'" and policy["default-src"] == "'none'"
        assert policy["script-src"].startswith("'sha256-") and "unsafe" not in policy["script-src"]  # its own script only
        assert "<script src" not in page.text and "https://" not in page.text  # nothing from elsewhere
        bearer = await client.get(f"{page_stack.url}/ui", headers={"authorization": f"Bearer {WEB}"})
        assert bearer.status_code == 200
        for odd in ("Basic", "Basic !!!", "Basic " + base64.b64encode(WEB.encode()).decode(), "Basic " + base64.b64encode(b"\xff:\xfe").decode()):
            assert (await client.get(f"{page_stack.url}/ui", headers={"authorization": odd})).status_code == 401, odd
        # the page's own calls take the same Basic credentials; the rest of the API does not (a browser caches them)
        status = await client.get(f"{page_stack.url}/v1/router", headers=basic("", WEB))
        assert status.status_code == 200
        models = await client.get(f"{page_stack.url}/v1/models", headers=basic("", WEB))
        assert models.status_code == 401 and "Bearer" in models.json()["error"]["message"]
        chat = {"model": "router", "messages": [{"role": "user", "content": "hi"}]}
        for headers, status_code in (({"content-type": "text/plain"}, 415), ({"sec-fetch-site": "cross-site"}, 403),
                                     ({"origin": "http://evil.example"}, 403), ({}, 200)):
            routed = await client.post(f"{page_stack.url}/v1/route", headers=basic("", WEB) | headers,
                                       content=json.dumps(chat) if headers else None, json=None if headers else chat)
            assert routed.status_code == status_code, (headers, routed.text)
        refused = await client.get(f"{page_stack.url}/v1/models")
        assert refused.status_code == 401 and "www-authenticate" not in refused.headers  # an API client: no prompt


async def test_router_status_shows_hosts_to_admin_callers_only(page_stack: Page) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        web = (await client.get(f"{page_stack.url}/v1/router", headers={"authorization": f"Bearer {WEB}"})).json()
        ops = (await client.get(f"{page_stack.url}/v1/router", headers={"authorization": f"Bearer {OPS}"})).json()
    assert web["hosts"] is None and web["policy"] == "interactive" and web["strong_share_asked"] == 0.5
    assert [h["url"] for h in ops["hosts"]] == [page_stack.live_host, page_stack.dead_host]
    assert ops["hosts"][0]["up"] and ops["hosts"][0]["last_error"] == ""
    router = ops["router"]
    assert router["error"] == "" and router["default_scorer"] == "difficulty"
    assert {s["name"]: s["role"] for s in router["scorers"]} == {"difficulty": "serving", "mf": "serving"}
    assert all(s["thresholds"] for s in router["scorers"])  # calibrated thresholds by share


async def test_route_takes_a_scorer_and_a_preview_records_nothing(page_stack: Page) -> None:
    body = {"model": "router", "messages": [{"role": "user", "content": PROMPT}]}
    decisions = page_stack.router.engine.metrics.decisions

    def counted(scorer: str) -> float:
        return sum(decisions.labels(model=m, scorer=scorer)._value.get() for m in (STRONG, WEAK))

    async with httpx.AsyncClient(timeout=10, headers={"authorization": f"Bearer {WEB}"}) as client:
        by_mf = (await client.post(f"{page_stack.url}/v1/route", json=body | {"scorer": "mf"})).json()
        default = (await client.post(f"{page_stack.url}/v1/route", json=body)).json()
        counted_before = counted("difficulty")
        previewed = (await client.post(f"{page_stack.url}/v1/route", json=body | {"preview": True})).json()
        counted_after = counted("difficulty")
        unknown = await client.post(f"{page_stack.url}/v1/route", json=body | {"scorer": "nope"})
    assert by_mf["scorer"] == "mf" and default["scorer"] == "difficulty"
    assert (counted_before, counted_after) == (1, 1)  # a route is a decision to the router; a preview is none
    assert (previewed["model"], previewed["score"]) == (default["model"], default["score"])
    assert unknown.status_code == 400 and "no scorer 'nope'" in unknown.json()["error"]["message"]


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (Debian's package; .ci/run installs it)")
async def test_the_page_routes_a_prompt_in_a_real_browser(page_stack: Page, tmp_path: Path) -> None:
    ops = {"authorization": f"Bearer {OPS}"}
    async with httpx.AsyncClient(timeout=30, headers=ops) as client:
        strong = 0
        for prompt in TRAFFIC:  # a realised share to show
            chat = {"model": "router", "messages": [{"role": "user", "content": prompt}], "stream": False}
            answered = await client.post(f"{page_stack.url}/v1/chat/completions", json=chat)
            assert answered.status_code == 200
            strong += answered.headers["x-route-model"] == STRONG
        recent = (await client.get(f"{page_stack.url}/v1/router")).json()["recent_caller"]
        assert (recent["routed"], recent["strong"]) == (len(TRAFFIC), strong)
        expected = {}
        for scorer in ("difficulty", "mf"):
            body = {"model": "router", "messages": [{"role": "user", "content": PROMPT}], "scorer": scorer, "preview": True}
            expected[scorer] = (await client.post(f"{page_stack.url}/v1/route", json=body)).json()["model"]
    async with open_tab(tmp_path / "profile") as tab:
        # as a person would open it: the key as the Basic-auth password (here in the URL: no dialog to fill)
        await tab.navigate(f"http://ops:{OPS}@127.0.0.1:{page_stack.gateway.http_port}/ui")
        await tab.wait_for("document.querySelectorAll('#hosts tr[data-host]').length === 2")  # its status call
        await tab.type_into("#prompt", PROMPT)
        await tab.click("#route")
        await tab.wait_for("document.body.dataset.routed === '2'")  # a decision per serving scorer
        rows = await tab.evaluate(
            "Object.fromEntries(['decisions', 'scorers', 'hosts'].map((id) => [id,"
            " [...document.querySelectorAll(`#${id} tr`)].map((tr) => ({...tr.dataset, text: tr.innerText}))]))"
        )
        problems = await tab.evaluate("document.getElementById('route-error').textContent")
        shot = tmp_path / "routing-page.png"
        await tab.screenshot(shot)
    assert problems == ""
    assert {row["scorer"]: row["model"] for row in rows["decisions"]} == expected
    assert all("vs threshold" in row["text"] for row in rows["decisions"])  # why: the score against the threshold
    assert {row["scorer"] for row in rows["scorers"]} == {"difficulty", "mf"}
    hosts = {row["host"]: row["up"] for row in rows["hosts"]}
    assert hosts == {page_stack.live_host: "true", page_stack.dead_host: "false"}
    assert "ejected" in next(row["text"] for row in rows["hosts"] if row["host"] == page_stack.dead_host)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    keep_picture("routing-page.png", shot.read_bytes())


async def test_with_the_router_down_the_status_names_it_and_the_decision_fails_open() -> None:
    router = f"127.0.0.1:{closed_port()}"
    async with serve_app(llm_app(LLMServerState())) as ollama_url:
        gateway = await build_gateway(gateway_settings(0, ollama_url, "unused", router={"address": router, "timeout_s": 1.0}))
        try:
            url = f"http://127.0.0.1:{gateway.http_port}"
            async with httpx.AsyncClient(timeout=20) as client:
                status = await client.get(f"{url}/v1/router")
                chat = {"model": "router", "messages": [{"role": "user", "content": PROMPT}], "preview": True}
                routed = await client.post(f"{url}/v1/route", json=chat)
        finally:
            await gateway.stop()
    assert status.status_code == 200
    assert status.json()["router"]["address"] == router and "UNAVAILABLE" in status.json()["router"]["error"]
    assert routed.status_code == 200 and routed.json()["degraded"] and router in routed.json()["reason"]


EVIL = """<!doctype html><html><body>
<form id="f" method="POST" enctype="text/plain" action="{target}">
<input type="hidden" name='{{"model": "router", "messages": [{{"role": "user", "content": "x' value='"}}]}}'>
</form><script>document.getElementById("f").submit();</script></body></html>"""


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (Debian's package; .ci/run installs it)")
async def test_another_site_cannot_use_the_browser_s_cached_key(
    page_stack: Page, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Cross-site request forgery: the routing page opened with the key (Basic auth, cached by the browser), then
    another site's page auto-submits a text/plain form whose field joins into valid JSON, to the chat API and to
    the page's own /v1/route. Real chromium; neither is served as the caller."""
    import logging

    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse
    from starlette.routing import Route

    caplog.set_level(logging.INFO, logger="gateway_service.access")
    targets = {"chat": f"{page_stack.url}/v1/chat/completions", "route": f"{page_stack.url}/v1/route"}

    async def evil(request):
        return HTMLResponse(EVIL.format(target=targets[request.path_params["name"]]))

    async with serve_app(Starlette(routes=[Route("/{name}", evil)])) as evil_url, open_tab(tmp_path / "profile") as tab:
        # The browser's cached credentials, on every request it makes (headless chromium keeps URL credentials for
        # the page's own requests only; a dialog's are sent by any page's form): the same Authorization header.
        await tab.send("Network.enable")
        await tab.send("Network.setExtraHTTPHeaders", headers=basic("ops", OPS))
        await tab.navigate(f"{page_stack.url}/ui")
        await tab.wait_for("document.querySelectorAll('#hosts tr[data-host]').length === 2")  # the page works
        for name, target in targets.items():
            await tab.send("Page.navigate", url=f"{evil_url}/{name}")  # the page submits its form as it loads
            await _landed(tab, target)
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "gateway_service.access"]
    forged = {line["api"]: line for line in lines if line["api"] in ("openai/chat", "openai/route")}
    assert forged["openai/chat"]["status"] == 401 and "Basic auth opens only the routing page" in forged["openai/chat"]["error"]
    assert forged["openai/route"]["status"] == 403 and "another site" in forged["openai/route"]["error"]
    assert not [line for line in lines if line["api"] in ("openai/chat", "openai/route") and line["status"] == 200]


async def test_a_preview_leaves_no_trace_on_the_next_real_decision(page_stack: Page) -> None:
    """A preview embeds its prompt (the cache keeps it), but the same prompt's first real Route still enters the
    caller's live-share window: it is not a repeat (#36: the preview had made it one)."""
    prompt = "Compare three ways to shard a multi-tenant Postgres database, with their failure modes."
    body = {"model": "router", "messages": [{"role": "user", "content": prompt}]}

    def samples() -> int:
        live = page_stack.router.engine.policy.live["difficulty"].peek("/web")
        return live.samples if live is not None else 0

    async with httpx.AsyncClient(timeout=10, headers={"authorization": f"Bearer {WEB}"}) as client:
        before = samples()
        assert (await client.post(f"{page_stack.url}/v1/route", json=body | {"preview": True})).status_code == 200
        assert samples() == before
        assert (await client.post(f"{page_stack.url}/v1/route", json=body)).status_code == 200
        assert samples() == before + 1
        assert (await client.post(f"{page_stack.url}/v1/route", json=body)).status_code == 200
        assert samples() == before + 1  # a real repeat stays out, as before


async def _landed(tab: Any, url: str, timeout: float = 20.0) -> None:
    """Wait until the tab shows ``url``, loaded; the page in between navigates away by itself (a DevTools call that
    meets it leaving fails, and is asked again)."""
    import asyncio

    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        try:
            if await tab.evaluate(f"location.href === {json.dumps(url)} && document.readyState === 'complete'"):
                return
        except AssertionError:  # "Inspected target navigated or closed": the form went on its way
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"the tab never showed {url}")
