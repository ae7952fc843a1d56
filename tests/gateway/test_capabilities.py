"""Capability-aware routing: a request that needs vision, tools or a JSON schema goes to a model that has it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import openai
import pytest
from pydantic import ValidationError

from gateway_service.server import GatewayApp, build_gateway
from tests.gateway.conftest import STRONG, WEAK, gateway_settings
from tests.http_servers import serve_app
from tests.llm_servers import LLMServerState, llm_app

PIXEL = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
IMAGE_MESSAGE: Any = [{"role": "user", "content": [
    {"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": PIXEL}},
]}]
TOOLS: Any = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}}]


@asynccontextmanager
async def gateway(router_port: int, capabilities: dict[str, list[str]]) -> AsyncIterator[tuple[GatewayApp, LLMServerState]]:
    ollama, other = LLMServerState(), LLMServerState()
    async with serve_app(llm_app(ollama)) as ollama_url, serve_app(llm_app(other)) as openai_url:
        app = await build_gateway(gateway_settings(router_port, ollama_url, openai_url, capabilities=capabilities))
        try:
            yield app, ollama
        finally:
            await app.stop()


def sdk(app: GatewayApp) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{app.http_port}/v1", api_key="x", max_retries=0)


async def test_a_routed_image_goes_to_the_model_that_can_see(router_app) -> None:
    async with gateway(router_app.port, {STRONG: ["vision", "tools", "json_schema"], WEAK: []}) as (app, upstream):
        async with sdk(app) as client:
            # "hi" alone is routed weak (the router's choice); the weak model cannot see, so the strong one answers.
            plain = await client.chat.completions.with_raw_response.create(
                model="router", messages=[{"role": "user", "content": "hi"}]
            )
            assert plain.headers["x-route-model"] == WEAK and "x-route-rerouted-for" not in plain.headers
            raw = await client.chat.completions.with_raw_response.create(model="router", messages=IMAGE_MESSAGE)
            answer = raw.parse()
    assert raw.headers["x-route-rerouted-for"] == "vision" and raw.headers["x-route-routed"] == "true"
    assert answer.model == STRONG and answer.choices[0].message.content == "Hello, world!"
    assert upstream.requests[-1]["body"]["model"] == STRONG and upstream.requests[-1]["body"]["messages"][0]["images"]


async def test_a_concrete_model_without_the_capability_is_a_clear_400(router_app) -> None:
    async with gateway(router_app.port, {STRONG: ["tools"], WEAK: []}) as (app, upstream):
        async with sdk(app) as client:
            with pytest.raises(openai.BadRequestError) as caught:
                await client.chat.completions.create(
                    model=WEAK, messages=[{"role": "user", "content": "weather?"}], tools=TOOLS
                )
    message = caught.value.body["message"]  # type: ignore[index]
    assert f"model '{WEAK}' cannot take this request: it lacks tools" in message
    assert f"models that can: {STRONG}" in message and "[capabilities]" in message
    assert upstream.requests == []  # refused before any upstream call


async def test_no_capable_model_is_a_clear_400_for_routed_requests_too(router_app) -> None:
    async with gateway(router_app.port, {STRONG: ["tools"], WEAK: ["tools"]}) as (app, _):
        async with sdk(app) as client:
            with pytest.raises(openai.BadRequestError) as caught:
                await client.chat.completions.create(
                    model="router", messages=[{"role": "user", "content": "x"}],
                    response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
                )
    assert "lacks json_schema" in caught.value.body["message"] and "no served model can" in caught.value.body["message"]  # type: ignore[index]


async def test_unlisted_models_are_assumed_capable(router_app) -> None:
    async with gateway(router_app.port, {}) as (app, _):
        async with sdk(app) as client:
            answer = await client.chat.completions.create(model=WEAK, messages=IMAGE_MESSAGE, tools=TOOLS)
    assert answer.model == WEAK


def test_capabilities_must_name_served_models() -> None:
    with pytest.raises(ValidationError, match="capabilities: 'llava:13b' is not served by any upstream"):
        gateway_settings(1, "http://x", "http://y", capabilities={"llava:13b": ["vision"]})
    with pytest.raises(ValidationError, match="vision"):
        gateway_settings(1, "http://x", "http://y", capabilities={STRONG: ["telepathy"]})


async def test_one_models_table_holds_windows_capabilities_and_prices(router_app) -> None:
    """[models."<name>"] capabilities and prices, beside its context_window; the old [capabilities] and [[prices]]
    still read, the new table winning where both name a model."""
    from gateway_service.config import GatewaySettings

    ollama, other = LLMServerState(), LLMServerState()
    async with serve_app(llm_app(ollama)) as ollama_url, serve_app(llm_app(other)) as openai_url:
        settings = gateway_settings(
            router_app.port, ollama_url, openai_url,
            models={WEAK: {"capabilities": [], "input_per_million": 0.1, "output_per_million": 0.2},
                    STRONG: {"capabilities": ["vision", "tools"], "context_window": 65536}},
            capabilities={WEAK: ["vision"]},  # the table wins: the weak model cannot see
            prices=[{"model": STRONG, "input_per_million": 3.0, "output_per_million": 15.0},
                    {"model": WEAK, "input_per_million": 9.0, "output_per_million": 9.0}],
        )
        assert settings.model_prices() == {STRONG: (3.0, 15.0), WEAK: (0.1, 0.2)}
        app = await build_gateway(settings)
        try:
            async with sdk(app) as client:
                raw = await client.chat.completions.with_raw_response.create(model="router", messages=IMAGE_MESSAGE)
            assert raw.headers["x-route-model"] == STRONG and raw.headers["x-route-rerouted-for"] == "vision"
        finally:
            await app.stop()
    with pytest.raises(ValidationError, match="input_per_million and output_per_million"):
        GatewaySettings(models={WEAK: {"input_per_million": 1.0}})
