"""The gateway over HTTP with the official openai SDK, against test Ollama/OpenAI servers and a real router."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
import openai
import pytest

from gateway_service.accounting.policy import ANYONE
from gateway_service.apis.frontdoor import Endpoint, FrontDoor, HttpFrontDoor
from gateway_service.apis.http_stream import EventStream
from gateway_service.apis.openai import OpenAICodec
from gateway_service.metrics import GatewayMetrics
from tests.gateway.conftest import STRONG, WEAK, Stack

HELLO = "Hello, world!"


@pytest.fixture
async def sdk(stack: Stack) -> AsyncIterator[openai.AsyncOpenAI]:
    """The official SDK, unchanged, pointed at the gateway."""
    async with openai.AsyncOpenAI(base_url=stack.base_url, api_key="not-needed", max_retries=0, timeout=20) as client:
        yield client


@asynccontextmanager
async def gateway_with(stack: Stack, **changes: object) -> AsyncIterator[openai.AsyncOpenAI]:
    """A second gateway over the same servers, with changed settings."""
    from gateway_service.server import build_gateway

    gateway = await build_gateway(stack.gateway.settings.model_copy(update=changes))
    try:
        async with openai.AsyncOpenAI(
            base_url=f"http://127.0.0.1:{gateway.http_port}/v1", api_key="x", max_retries=0, timeout=20
        ) as client:
            yield client
    finally:
        await gateway.stop()


async def test_sdk_streaming_through_the_router(stack: Stack, sdk: openai.AsyncOpenAI) -> None:
    stream = await sdk.chat.completions.create(
        model="router-mf-50",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello to the world."}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, models, finish, usage = "", set(), None, None
    async for chunk in stream:
        models.add(chunk.model)
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    assert text == HELLO
    assert finish == "stop"
    (model,) = models
    assert model in (STRONG, WEAK)
    assert usage is not None and usage.completion_tokens == 4 and usage.prompt_tokens == 7
    sent = stack.ollama.requests[-1]
    assert sent["path"] == "/api/chat" and sent["body"]["model"] == model and sent["body"]["stream"] is True
    assert [m["role"] for m in sent["body"]["messages"]] == ["system", "user"]


async def test_sdk_whole_response_with_route_headers(stack: Stack, sdk: openai.AsyncOpenAI) -> None:
    raw = await sdk.chat.completions.with_raw_response.create(
        model="router-mf-0.11593", messages=[{"role": "user", "content": "Prove Fermat's little theorem."}]
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == HELLO
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens == 4
    assert raw.headers["x-route-model"] == completion.model
    assert raw.headers["x-route-routed"] == "true" and raw.headers["x-route-degraded"] == "false"
    assert float(raw.headers["x-route-threshold"]) == pytest.approx(0.11593)
    score = float(raw.headers["x-route-score"])
    assert completion.model == (STRONG if score >= 0.11593 else WEAK)


async def test_concrete_model_bypasses_routing_and_openai_upstream_gets_its_own_key(
    stack: Stack, sdk: openai.AsyncOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-ambient-must-not-leak")
    monkeypatch.setenv("TEST_UPSTREAM_KEY", "sk-upstream")
    # The key is read when the upstream client is built: rebuild the openai upstream's client.
    from gateway_service.upstreams import open_upstream

    settings = next(u for u in stack.gateway.settings.upstreams if u.name == "openai")
    upstream = open_upstream(settings)
    stack.gateway.chat.dispatch.by_model["gpt-4o-mini"] = upstream
    try:
        raw = await sdk.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=7, stop=["\n"], seed=3,
            temperature=0.2, top_p=0.9,
        )
    finally:
        await upstream.aclose()
    assert raw.parse().choices[0].message.content == HELLO
    assert raw.headers["x-route-routed"] == "false"
    sent = stack.openai.requests[-1]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["headers"]["authorization"] == "Bearer sk-upstream"
    body = sent["body"]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert (body["max_tokens"], body["stop"], body["seed"], body["temperature"], body["top_p"]) == (7, ["\n"], 3, 0.2, 0.9)


async def test_ollama_gets_options_in_its_own_shape(stack: Stack, sdk: openai.AsyncOpenAI) -> None:
    await sdk.chat.completions.create(
        model=WEAK, messages=[{"role": "user", "content": "hi"}], max_tokens=5, stop="END", seed=1, temperature=0.0
    )
    body = stack.ollama.requests[-1]["body"]
    assert body["options"] == {"num_predict": 5, "stop": ["END"], "seed": 1, "temperature": 0.0}


async def test_models_lists_router_pseudo_models_and_upstream_models(stack: Stack, sdk: openai.AsyncOpenAI) -> None:
    ids = {m.id for m in (await sdk.models.list()).data}
    assert {"router", "router-mf-20", "router-mf-50", "router-mf-80", STRONG, WEAK, "gpt-4o-mini"} <= ids


async def test_router_down_fails_open_to_the_default_model(stack_without_router: Stack) -> None:
    async with openai.AsyncOpenAI(base_url=stack_without_router.base_url, api_key="x", max_retries=0) as sdk:
        raw = await sdk.chat.completions.with_raw_response.create(
            model="router", messages=[{"role": "user", "content": "hello"}]
        )
    assert raw.parse().model == STRONG
    assert raw.headers["x-route-degraded"] == "true" and raw.headers["x-route-routed"] == "false"
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(f"http://127.0.0.1:{stack_without_router.gateway.http_port}/metrics")).text
    assert "gateway_fail_open_total 1.0" in metrics


async def test_upstream_down_before_first_token_falls_back(stack: Stack, sdk: openai.AsyncOpenAI) -> None:
    stack.ollama.fail_status = 500
    async with gateway_with(stack, fallback_model="gpt-4o-mini") as other:
        raw = await other.chat.completions.with_raw_response.create(
            model=STRONG, messages=[{"role": "user", "content": "hello"}]
        )
    assert raw.parse().model == "gpt-4o-mini"
    assert raw.parse().choices[0].message.content == HELLO
    assert raw.headers["x-route-fallback"] == "true"


async def test_fallback_down_too_is_a_502_naming_the_url(stack: Stack, sdk: openai.AsyncOpenAI) -> None:
    stack.ollama.fail_status = 500  # strong and fallback (weak) share this server
    with pytest.raises(openai.APIStatusError) as info:
        await sdk.chat.completions.create(model=STRONG, messages=[{"role": "user", "content": "hello"}])
    assert info.value.status_code == 502
    # What was asked first, with its URL and status; then the fallback, in one clause when it failed alike.
    assert f"model {STRONG!r} failed: upstream 'ollama' (ollama) at http://" in info.value.message
    assert f"/api/chat for model {STRONG!r} answered HTTP 500" in info.value.message
    assert info.value.message.endswith(f"Its fallback {WEAK!r} failed the same way")


async def test_stream_cut_mid_way_is_a_terminal_error_not_done(stack: Stack, sdk: openai.AsyncOpenAI) -> None:
    stack.ollama.cut_after = 2
    stream = await sdk.chat.completions.create(
        model=WEAK, messages=[{"role": "user", "content": "hello"}], stream=True
    )
    received = ""
    with pytest.raises(openai.APIError, match="upstream 'ollama'"):
        async for chunk in stream:
            received += chunk.choices[0].delta.content or "" if chunk.choices else ""
    assert received == "Hello,"


async def test_malformed_chunk_mid_stream_is_a_terminal_error(stack: Stack, sdk: openai.AsyncOpenAI) -> None:
    stack.ollama.malformed_after = 1
    stream = await sdk.chat.completions.create(
        model=WEAK, messages=[{"role": "user", "content": "hello"}], stream=True
    )
    with pytest.raises(openai.APIError, match="malformed chunk"):
        async for _ in stream:
            pass


async def test_client_disconnect_closes_the_upstream_request(stack: Stack, sdk: openai.AsyncOpenAI) -> None:
    stack.ollama.reply = tuple(f"token{i} " for i in range(200))
    stack.ollama.chunk_delay_s = 0.02
    async with httpx.AsyncClient(timeout=10) as http:
        body = {"model": WEAK, "messages": [{"role": "user", "content": "long story"}], "stream": True}
        async with http.stream("POST", f"{stack.base_url}/chat/completions", json=body) as response:
            async for line in response.aiter_lines():
                if "token3" in line:
                    break  # leave mid-stream
    for _ in range(100):
        if stack.ollama.closed_early:
            break
        await asyncio.sleep(0.02)
    assert stack.ollama.closed_early == 1 and stack.ollama.open_streams == 0


async def test_a_client_leaving_a_silent_stream_closes_the_upstream_request_at_once(stack: Stack) -> None:
    """No next chunk to fail on: the gateway notices the disconnect itself and cancels the upstream call."""
    stack.ollama.reply = tuple(f"token{i} " for i in range(20))
    stack.ollama.stall_after, stack.ollama.stall_s = 2, 30.0  # then silent far longer than the test
    async with httpx.AsyncClient(timeout=10) as http:
        body = {"model": WEAK, "messages": [{"role": "user", "content": "long story"}], "stream": True}
        async with http.stream("POST", f"{stack.base_url}/chat/completions", json=body) as response:
            async for line in response.aiter_lines():
                if "token1" in line:
                    break  # leave while the upstream is silent
    for _ in range(100):
        if stack.ollama.closed_early:
            break
        await asyncio.sleep(0.02)
    assert stack.ollama.closed_early == 1 and stack.ollama.open_streams == 0


async def test_upstream_429_is_passed_on_with_retry_after(stack: Stack, sdk: openai.AsyncOpenAI) -> None:
    stack.openai.fail_status, stack.openai.retry_after = 429, "12"
    async with gateway_with(stack, fallback_model=None) as other:
        with pytest.raises(openai.RateLimitError) as info:
            await other.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert info.value.response.headers["retry-after"] == "12"
    assert "Rate limit reached" in info.value.message


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b'{"model": "router"}', 400, "messages: Field required"),
        (b'{"model": "router", "messages": []}', 400, "messages"),
        (b'{"model": "router", "messages": [{"role": "wizard", "content": "x"}]}', 400, "role 'wizard'"),
        (b'{"model": "router", "messages": [{"role": "user", "content": 5}]}', 400, "messages.0.content"),
        (b'{"model": "router-mf-7", "messages": [{"role": "user", "content": "x"}]}', 400, "within [0, 1]"),
        (b'{"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}', 404, "'gpt-9' is not served here"),
        (b'{"model": "router", "messages": [{"role": "system", "content": "x"}]}', 400, "no user message"),
    ],
)
async def test_bad_requests_get_openai_errors(stack: Stack, body: bytes, status: int, message: str) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(
            f"{stack.base_url}/chat/completions", content=body, headers={"content-type": "application/json"}
        )
    assert response.status_code == status
    error = response.json()["error"]
    assert message in error["message"]
    assert error["type"] == "invalid_request_error"


async def test_upstream_connections_are_kept_alive_between_requests(stack: Stack, sdk: openai.AsyncOpenAI) -> None:
    """The rest of each upstream response is read after its last event, so the connection returns to the
    pool: without that, every request opened a new TCP connection (thousands in TIME_WAIT under load)."""
    for model in (WEAK, "gpt-4o-mini"):
        for _ in range(4):
            stream = await sdk.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], stream=True)
            assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) == HELLO
    for state in (stack.ollama, stack.openai):
        peers = {r["peer"] for r in state.requests if r["path"] != "/api/tags" and "chat" in r["path"]}
        assert len(peers) == 1, peers


async def test_a_client_reported_gone_on_send_ends_the_answer_quietly(caplog: pytest.LogCaptureFixture) -> None:
    """Servers on ASGI 2.4 raise OSError from send() once the client left (uvicorn drops the data instead)."""
    async def events() -> AsyncIterator[bytes]:
        yield b"data: 1\n\n"
        yield b"data: 2\n\n"

    async def handler(request: object, x: object) -> EventStream:
        return EventStream(events(), "text/event-stream", {})

    async def receive() -> MutableMapping[str, Any]:
        await asyncio.Event().wait()  # no disconnect message: the send is what fails
        raise AssertionError

    sent: list[str] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(str(message["type"]))
        if message["type"] == "http.response.body":
            raise OSError("the client is gone")

    caplog.set_level(logging.INFO, logger="gateway_service.access")
    endpoint = Endpoint("openai/chat", frozenset({"GET"}), handler, OpenAICodec(), auth=False)
    app = HttpFrontDoor(FrontDoor(GatewayMetrics(), lambda token: ANYONE, 1.0), {"/x": endpoint}, {}, lambda path: OpenAICodec())
    await app({"type": "http", "path": "/x", "method": "GET", "headers": []}, receive, send)
    assert sent == ["http.response.start", "http.response.body"]  # nothing sent after, no exception
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "gateway_service.access"]
    assert [(line["status"], line["outcome"]) for line in lines] == [(499, "client_disconnected")]
