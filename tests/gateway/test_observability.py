"""Gateway auth, metrics and the per-request log line; secrets never show up in any of them."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

import grpc
import httpx
import openai
import pytest

from gateway_service.server import GatewayApp, build_gateway
from router_service.server import build_router
from routing_api.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from tests.conftest import router_settings
from tests.gateway.conftest import WEAK, Stack, gateway_settings

CLIENT_KEY, ROUTER_TOKEN, UPSTREAM_KEY = "sk-client-7f3a9", "router-token-91c2", "sk-upstream-55d1"


@pytest.fixture
async def guarded(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[GatewayApp]:
    """A gateway with client keys, in front of a router that wants a token."""
    monkeypatch.setenv("ROUTER_TOKEN_FOR_TEST", ROUTER_TOKEN)
    monkeypatch.setenv("TEST_UPSTREAM_KEY", UPSTREAM_KEY)
    router = await build_router(router_settings(auth={"token_env": "ROUTER_TOKEN_FOR_TEST"}))
    ollama_url, openai_url = stack.upstream_roots
    settings = gateway_settings(
        router.port, ollama_url, openai_url,
        auth={"api_keys": [CLIENT_KEY]},
        router={"address": f"127.0.0.1:{router.port}", "timeout_s": 2.0, "token_env": "ROUTER_TOKEN_FOR_TEST"},
    )
    try:
        gateway = await build_gateway(settings)
    except BaseException:
        await router.stop()
        raise
    try:
        yield gateway
    finally:
        await gateway.stop()
        await router.stop()


async def test_api_keys_guard_http_and_grpc(guarded: GatewayApp, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    base = f"http://127.0.0.1:{guarded.http_port}/v1"
    async with openai.AsyncOpenAI(base_url=base, api_key="sk-wrong", max_retries=0) as sdk:
        with pytest.raises(openai.AuthenticationError) as info:
            await sdk.chat.completions.create(model="router", messages=[{"role": "user", "content": "hi"}])
        assert info.value.code == "invalid_api_key"
    async with openai.AsyncOpenAI(base_url=base, api_key=CLIENT_KEY, max_retries=0) as sdk:
        raw = await sdk.chat.completions.with_raw_response.create(
            model="router", messages=[{"role": "user", "content": "hi"}]
        )
    assert raw.headers["x-route-routed"] == "true"  # the router accepted the gateway's token
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"http://127.0.0.1:{guarded.http_port}/healthz")).status_code == 200
        assert (await http.get(f"{base}/models")).status_code == 401
    async with grpc.aio.insecure_channel(f"127.0.0.1:{guarded.grpc_port}") as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        request = gateway_pb2.ChatRequest(model=WEAK, messages=[gateway_pb2.ChatMessage(role="user", content="hi")])
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            async for _ in stub.Chat(request, timeout=10):
                pass
        assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
        chunks = [c async for c in stub.Chat(request, timeout=10, metadata=(("authorization", f"Bearer {CLIENT_KEY}"),))]
        assert "".join(c.delta for c in chunks) == "Hello, world!"
    # No secret in any log line, error message or metric.
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(f"http://127.0.0.1:{guarded.http_port}/metrics")).text
    logged = caplog.text + str(info.value) + (denied.value.details() or "") + metrics
    for secret in (CLIENT_KEY, ROUTER_TOKEN, UPSTREAM_KEY):
        assert secret not in logged


async def test_metrics_and_one_log_line_per_request(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway_service.access")
    url = f"{stack.base_url}/chat/completions"
    async with httpx.AsyncClient(timeout=20) as http:
        ok = await http.post(url, json={"model": "router-mf-50", "messages": [{"role": "user", "content": "hi"}]})
        assert ok.status_code == 200
        stack.ollama.cut_after = 2
        await http.post(url, json={"model": WEAK, "messages": [{"role": "user", "content": "hi"}], "stream": True})
        metrics = (await http.get(f"http://127.0.0.1:{stack.gateway.http_port}/metrics")).text
    model = ok.json()["model"]
    assert f'gateway_route_decisions_total{{degraded="false",fallback="false",model="{model}",routed="true"}} 1.0' in metrics
    assert 'gateway_time_to_first_token_seconds_count{upstream="ollama"} 2.0' in metrics
    assert 'gateway_tokens_per_second_count{upstream="ollama"} 1.0' in metrics
    assert 'gateway_upstream_errors_total{kind="UpstreamStreamError",upstream="ollama"} 1.0' in metrics
    assert "gateway_router_overhead_seconds_count 1.0" in metrics
    assert "gateway_inflight_streams 0.0" in metrics
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "gateway_service.access"]
    assert [line["outcome"] for line in lines] == ["ok", "error:UpstreamStreamError"]
    first = lines[0]
    assert first["model"] == model and first["routed"] is True and first["usage"]["completion_tokens"] == 4
    assert {"request_id", "route_ms", "ttft_ms", "stream_ms", "requested", "upstream"} <= first.keys()


async def test_limits_refuse_clearly(stack: Stack) -> None:
    from gateway_service.server import build_gateway

    settings = stack.gateway.settings.model_copy(update={
        "limits": type(stack.gateway.settings.limits)(
            max_body_bytes=2048, max_messages=3, max_prompt_chars=100, max_streams=2, max_streams_per_key=1,
        ),
        "auth": type(stack.gateway.settings.auth)(api_keys=("key-a", "key-b", "key-c")),
    })
    gateway = await build_gateway(settings)
    url = f"http://127.0.0.1:{gateway.http_port}/v1/chat/completions"
    say = [{"role": "user", "content": "hi"}]
    try:
        async with httpx.AsyncClient(timeout=20, headers={"authorization": "Bearer key-c"}) as http:
            big = await http.post(url, json={"model": WEAK, "messages": [{"role": "user", "content": "x" * 4000}]})
            assert big.status_code == 413 and "limits.max_body_bytes=2048" in big.json()["error"]["message"]
            many = await http.post(url, json={"model": WEAK, "messages": say * 4})
            assert many.status_code == 400 and "limits.max_messages=3" in many.json()["error"]["message"]
            long = await http.post(url, json={"model": WEAK, "messages": [{"role": "user", "content": "y" * 500}]})
            assert long.status_code == 413 and "limits.max_prompt_chars=100" in long.json()["error"]["message"]

            stack.ollama.reply = tuple(f"t{i} " for i in range(40))
            stack.ollama.chunk_delay_s = 0.02
            body = {"model": WEAK, "messages": say, "stream": True}
            async with http.stream("POST", url, json=body, headers={"authorization": "Bearer key-a"}) as first:
                lines = first.aiter_lines()
                await anext(lines)  # key-a now holds its one stream
                same_key = await http.post(url, json=body, headers={"authorization": "Bearer key-a"})
                assert same_key.status_code == 429 and same_key.headers["retry-after"] == "1"
                assert "limits.max_streams_per_key" in same_key.json()["error"]["message"]
                async with http.stream("POST", url, json=body, headers={"authorization": "Bearer key-b"}) as second:
                    second_lines = second.aiter_lines()
                    await anext(second_lines)
                    overall = await http.post(url, json=body, headers={"authorization": "Bearer key-c"})
                    assert overall.status_code == 429 and "limits.max_streams" in overall.json()["error"]["message"]
                    async for _ in second_lines:
                        pass
                async for _ in lines:
                    pass
            again = await http.post(url, json={"model": WEAK, "messages": say}, headers={"authorization": "Bearer key-a"})
            assert again.status_code == 200  # slots were given back
    finally:
        await gateway.stop()


async def test_without_auth_only_the_overall_stream_limit_applies(stack: Stack) -> None:
    """Tokens are not identities when auth is off: anonymous clients (and ones sending the same
    dummy key, as SDKs do) must not share one per-key budget that caps the whole gateway."""
    from gateway_service.server import build_gateway

    settings = stack.gateway.settings.model_copy(update={"limits": type(stack.gateway.settings.limits)(
        max_streams=2, max_streams_per_key=1,
    )})
    gateway = await build_gateway(settings)
    url = f"http://127.0.0.1:{gateway.http_port}/v1/chat/completions"
    body = {"model": WEAK, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    stack.ollama.reply = tuple(f"t{i} " for i in range(40))
    stack.ollama.chunk_delay_s = 0.02
    try:
        async with httpx.AsyncClient(timeout=20) as http, \
                http.stream("POST", url, json=body) as first, \
                http.stream("POST", url, json=body, headers={"authorization": "Bearer sk-dummy"}) as second:
            assert first.status_code == second.status_code == 200
            lines = [first.aiter_lines(), second.aiter_lines()]
            for stream_lines in lines:
                await anext(stream_lines)  # both hold a slot now
            third = await http.post(url, json=body, headers={"authorization": "Bearer sk-dummy"})
            assert third.status_code == 429 and "limits.max_streams" in third.json()["error"]["message"]
            assert "max_streams_per_key" not in third.json()["error"]["message"]
            for stream_lines in lines:
                async for _ in stream_lines:
                    pass
    finally:
        await gateway.stop()


async def test_request_id_reaches_the_router_log(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="router_service.access")
    async with httpx.AsyncClient(timeout=20) as http:
        response = await http.post(
            f"{stack.base_url}/chat/completions", headers={"x-request-id": "req-trace-4711"},
            json={"model": "router", "messages": [{"role": "user", "content": "trace me"}]},
        )
    assert response.status_code == 200 and response.headers["x-request-id"] == "req-trace-4711"
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "router_service.access"]
    assert [line["request_id"] for line in lines] == ["req-trace-4711"]
    assert lines[0]["models"] == [response.json()["model"]] and lines[0]["total_ms"] > 0
