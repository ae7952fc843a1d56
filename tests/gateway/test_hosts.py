"""One upstream, several hosts: balancing, retries before the first token, ejection, healing, model lists.

Real test servers in Ollama's wire format on real sockets (one of them a separate
process, killed with SIGKILL mid-load), a real gateway; the router is down and the
requests name a concrete model, so every figure here is about the hosts.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from gateway_service.config import GatewaySettings, UpstreamSettings
from gateway_service.server import GatewayApp, build_gateway
from tests.conftest import ROOT, closed_port
from tests.gateway.conftest import STRONG, WEAK
from tests.http_servers import serve_app
from tests.llm_servers import LLMServerState, llm_app

KILLABLE_HOST = """
import sys, uvicorn
from tests.llm_servers import LLMServerState, llm_app
uvicorn.run(llm_app(LLMServerState(chunk_delay_s=0.05)), host="127.0.0.1", port=int(sys.argv[1]),
            log_level="critical", access_log=False)
"""


def settings_for(hosts: list[str], *, fallback: str | None = None, **upstream: Any) -> GatewaySettings:
    return GatewaySettings(
        server={"host": "127.0.0.1", "http_port": 0, "grpc_port": 0, "grace_s": 2},
        router={"address": f"127.0.0.1:{closed_port()}", "timeout_s": 0.2},
        upstreams=[{"name": "pool", "provider": "ollama", "base_urls": hosts, "models": [STRONG, WEAK],
                    "eject_base_s": 0.3, "eject_max_s": 1.0, "connect_timeout_s": 1.0, **upstream}],
        default_model=STRONG, fallback_model=fallback,
    )


@asynccontextmanager
async def hosts(*states: LLMServerState) -> AsyncIterator[list[str]]:
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(serve_app(llm_app(state))) for state in states]


@asynccontextmanager
async def gateway(settings: GatewaySettings) -> AsyncIterator[GatewayApp]:
    app = await build_gateway(settings)
    try:
        yield app
    finally:
        await app.stop()


async def chat(http: httpx.AsyncClient, app: GatewayApp, model: str = STRONG) -> tuple[int, str, bool]:
    """(status, text, whether the stream ended cleanly with [DONE])."""
    url = f"http://127.0.0.1:{app.http_port}/v1/chat/completions"
    body = {"model": model, "messages": [{"role": "user", "content": "hello"}], "stream": True}
    async with http.stream("POST", url, json=body) as response:
        if response.status_code != 200:
            return response.status_code, (await response.aread()).decode(), False
        text, done = "", False
        async for line in response.aiter_lines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: {") and '"choices"' in line:
                text += "".join(c["delta"].get("content") or "" for c in json.loads(line[6:])["choices"])
        return 200, text, done


def served(state: LLMServerState) -> int:
    return sum(1 for r in state.requests if r["path"] == "/api/chat")


async def metric_lines(app: GatewayApp, name: str) -> list[str]:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{app.http_port}/metrics")).text
    return [line for line in text.splitlines() if line.startswith(name)]


def test_one_host_or_several_not_both() -> None:
    base = {"name": "u", "provider": "ollama", "models": ["m"]}
    with pytest.raises(ValidationError, match=r"set base_url \(one host\) or base_urls"):
        UpstreamSettings(**base, base_url="http://a", base_urls=("http://b",))
    with pytest.raises(ValidationError, match=r"set base_url \(one host\) or base_urls"):
        UpstreamSettings(**base)
    with pytest.raises(ValidationError, match="lists a URL twice"):
        UpstreamSettings(**base, base_urls=("http://a/", "http://a"))
    assert UpstreamSettings(**base, base_urls=("http://a/", "http://b")).hosts == ("http://a", "http://b")


async def test_requests_go_to_the_least_busy_host_so_a_slow_host_gets_fewer() -> None:
    fast_a, fast_b = LLMServerState(chunk_delay_s=0.02), LLMServerState(chunk_delay_s=0.02)
    slow = LLMServerState(chunk_delay_s=0.02, stall_s=0.4)  # 0.4 s before its first byte
    async with hosts(fast_a, fast_b, slow) as urls, gateway(settings_for(urls)) as app, httpx.AsyncClient(timeout=10) as http:
        queue = list(range(90))

        async def worker() -> list[tuple[int, str, bool]]:
            results = []
            while queue:
                queue.pop()
                results.append(await chat(http, app))
            return results

        results = [r for batch in await asyncio.gather(*(worker() for _ in range(9))) for r in batch]
    assert results == [(200, "Hello, world!", True)] * 90
    counts = served(fast_a), served(fast_b), served(slow)
    assert sum(counts) == 90
    assert counts[2] < counts[0] / 2 and counts[2] < counts[1] / 2, counts  # least outstanding, not round robin
    assert min(counts) > 0, counts


async def test_a_host_answering_503_is_ejected_retried_around_and_comes_back_after_its_back_off() -> None:
    good, bad = LLMServerState(), LLMServerState(fail_status=503, retry_after="1")
    # Requests alone eject it (no health checks), and a trial request brings it back.
    knobs: dict[str, Any] = {"health_interval_s": 0, "eject_base_s": 1.0, "eject_max_s": 1.0, "eject_after": 3}
    async with hosts(good, bad) as urls, gateway(settings_for(urls, **knobs)) as app, httpx.AsyncClient(timeout=10) as http:
        results = [await chat(http, app) for _ in range(20)]
        assert results == [(200, "Hello, world!", True)] * 20  # every 503 was retried on the good host
        assert served(bad) == 3  # eject_after = 3 in a row; then none while ejected
        assert f'gateway_upstream_host_up{{host="{urls[1]}",upstream="pool"}} 0.0' in await metric_lines(app, "gateway_upstream_host_up")
        bad.fail_status = None  # healed
        await asyncio.sleep(1.05)  # the back-off
        results = [await chat(http, app) for _ in range(30)]
        assert results == [(200, "Hello, world!", True)] * 30
        assert served(bad) >= 3 + 5  # a trial request, then its share again
        up = await metric_lines(app, "gateway_upstream_host_up")
        assert f'gateway_upstream_host_up{{host="{urls[1]}",upstream="pool"}} 1.0' in up
        retries = await metric_lines(app, "gateway_upstream_retries_total")
    assert retries == ['gateway_upstream_retries_total{upstream="pool"} 3.0']


async def test_a_host_killed_mid_load_costs_no_error_before_the_first_token_and_is_used_again_once_back() -> None:
    port = closed_port()
    killable_url = f"http://127.0.0.1:{port}"

    def start_killable() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-c", KILLABLE_HOST, str(port)], cwd=ROOT, stderr=subprocess.DEVNULL)

    async def wait_up() -> None:
        async with httpx.AsyncClient() as probe:
            for _ in range(300):
                try:
                    await probe.get(f"{killable_url}/api/tags")
                    return
                except httpx.HTTPError:
                    await asyncio.sleep(0.05)
        raise RuntimeError("the killable host did not start")

    process = start_killable()
    try:
        await wait_up()
        a, b = LLMServerState(chunk_delay_s=0.05), LLMServerState(chunk_delay_s=0.05)
        async with hosts(a, b) as urls, gateway(settings_for([*urls, killable_url])) as app, \
                httpx.AsyncClient(timeout=10) as http:
            outcomes: Counter[str] = Counter()
            stop_at = time.monotonic() + 2.0

            async def worker() -> None:
                while time.monotonic() < stop_at:
                    status, text, done = await chat(http, app)
                    outcomes["ok" if done and text == "Hello, world!" else f"status {status}" if status != 200 else "cut"] += 1

            load = asyncio.gather(*(worker() for _ in range(9)))
            await asyncio.sleep(0.7)
            process.send_signal(signal.SIGKILL)
            process.wait()
            await load
            assert set(outcomes) <= {"ok", "cut"}, outcomes  # no status error: nothing failed before the first token
            # only streams open on the killed host are cut; the rest go on (how many in 2 s depends on the machine's load)
            assert outcomes["cut"] <= 9 and outcomes["ok"] > 20, outcomes
            ok_before = [line for line in await metric_lines(app, "gateway_upstream_host_requests_total")
                         if killable_url in line and 'outcome="ok"' in line]

            process = start_killable()  # back, on the same port
            await wait_up()
            await asyncio.sleep(1.1)  # the longest back-off in this test (eject_max_s)
            results = []
            for _ in range(5):
                results += await asyncio.gather(*(chat(http, app) for _ in range(8)))
            assert results == [(200, "Hello, world!", True)] * 40
            ok_after = [line for line in await metric_lines(app, "gateway_upstream_host_requests_total")
                        if killable_url in line and 'outcome="ok"' in line]
            assert float(ok_after[0].rsplit(" ", 1)[1]) >= float(ok_before[0].rsplit(" ", 1)[1]) + 5, (ok_before, ok_after)
    finally:
        process.kill()
        process.wait()


async def test_model_lists_steer_each_model_to_the_hosts_that_have_it() -> None:
    weak_only, both = LLMServerState(models=(WEAK,)), LLMServerState(models=(STRONG, WEAK))
    async with hosts(weak_only, both) as urls, gateway(settings_for(urls)) as app, httpx.AsyncClient(timeout=10) as http:
        pool = app.chat.dispatch.by_model[STRONG].pool  # type: ignore[attr-defined]
        for _ in range(100):  # the first health check runs at start
            if all(h.models is not None for h in pool.hosts):
                break
            await asyncio.sleep(0.02)
        strong = [await chat(http, app, STRONG) for _ in range(10)]
        weak = [await chat(http, app, WEAK) for _ in range(20)]
    assert strong == [(200, "Hello, world!", True)] * 10 and weak == [(200, "Hello, world!", True)] * 20
    assert [r["body"]["model"] for r in weak_only.requests if r["path"] == "/api/chat"].count(STRONG) == 0
    assert 0 < served(weak_only) < 20  # the weak model still goes to both


async def test_when_every_host_is_down_the_error_names_each_host_and_later_calls_fail_fast() -> None:
    urls = [f"http://127.0.0.1:{closed_port()}", f"http://127.0.0.1:{closed_port()}"]
    async with gateway(settings_for(urls, eject_after=1, health_interval_s=0)) as app, httpx.AsyncClient(timeout=10) as http:
        status, first, _ = await chat(http, app)
        assert status == 502 and "is unreachable" in first
        started = time.monotonic()
        status, second, _ = await chat(http, app)
        elapsed = time.monotonic() - started
    assert status == 502 and elapsed < 0.5
    message = json.loads(second)["error"]["message"]
    assert "has no host to serve model" in message and all(url in message for url in urls), message
    assert "it will be tried again in" in message and "upstreams[pool].base_urls" in message


async def test_one_trial_at_a_time_even_when_an_older_stream_ends_during_it() -> None:
    from gateway_service.upstreams.hosts import HostPool

    now = [0.0]
    pool = HostPool(UpstreamSettings(name="u", provider="ollama", base_urls=("http://a", "http://b"), models=("m",),
                                     eject_after=1, eject_base_s=1.0), clock=lambda: now[0])
    a, b = pool.hosts
    old = await pool.acquire("m", [b])  # a stream on host a, begun before its ejection
    assert old is a
    pool.failed(a, "UpstreamTimeout", "silent", a.epoch)  # ejected for 1 s
    now[0] = 1.5  # the back-off ran out: the next request on a is its trial
    assert await pool.acquire("m", [b]) is a and a.trial
    pool.release(a, trial=False)  # the older stream ends: the trial is still in flight
    assert await pool.acquire("m", [b]) is None  # so a takes no second trial; b was tried


def test_a_host_that_stays_down_is_warned_about_once_and_its_return_is_said(caplog: pytest.LogCaptureFixture) -> None:
    """#35: with Ollama absent, each health check re-ejected the host with a WARNING (19 lines in 4.5 min), in a
    past tense ("tried again in 59.2s") for what was to come."""
    import logging

    from gateway_service.upstreams.hosts import HostPool

    caplog.set_level(logging.DEBUG, logger="gateway_service.upstreams.hosts")
    now = [0.0]
    pool = HostPool(UpstreamSettings(name="u", provider="ollama", base_url="http://a", models=("m",), eject_after=1,
                                     eject_base_s=1.0, eject_max_s=60.0), clock=lambda: now[0])
    (a,) = pool.hosts
    for check in range(20):  # a health check every 15 s, each failing
        now[0] = check * 15.0
        pool.check_failed(a, "GET http://a/api/tags: ClientConnectorError: [Errno 111] Connect call failed")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "it will be tried again in 1.0 s" in warnings[0], warnings
    pool.checked(a, frozenset({"m"}))
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert infos == ["upstream 'u': host http://a passed its health check and is back"]
    pool.check_failed(a, "down again")  # a new outage: a new warning
    assert sum(r.levelno == logging.WARNING for r in caplog.records) == 2
