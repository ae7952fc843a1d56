"""A real stack on free ports: router, test LLM servers (Ollama and OpenAI formats), gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from gateway_service.config import GatewaySettings
from gateway_service.server import GatewayApp, build_gateway
from tests.conftest import closed_port
from tests.http_servers import serve_app
from tests.llm_servers import LLMServerState, llm_app

STRONG, WEAK = "llama3.1:8b", "llama3.2:1b"  # the router's default strong/weak names


@dataclass
class Stack:
    gateway: GatewayApp
    ollama: LLMServerState
    openai: LLMServerState

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway.http_port}/v1"

    @property
    def upstream_roots(self) -> tuple[str, str]:
        """The Ollama and OpenAI test servers' root URLs, to build another gateway over them."""
        ollama, openai = (u.hosts[0].removesuffix("/v1") for u in self.gateway.settings.upstreams)
        return ollama, openai

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.gateway.grpc_port}"


def gateway_settings(router_port: int, ollama_url: str, openai_url: str, **overrides: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "http_port": 0, "grpc_port": 0, "grace_s": 5},
        "router": {"address": f"127.0.0.1:{router_port}", "timeout_s": 2.0},
        "upstreams": [
            {"name": "ollama", "provider": "ollama", "base_url": ollama_url, "models": [STRONG, WEAK]},
            {"name": "openai", "provider": "openai", "base_url": f"{openai_url}/v1", "models": ["gpt-4o-mini"],
             "api_key_env": "TEST_UPSTREAM_KEY"},
        ],
        "default_model": STRONG,
        "fallback_model": WEAK,
    }
    values.update(overrides)
    return GatewaySettings(**values)


@pytest.fixture
async def stack(router_app) -> AsyncIterator[Stack]:
    ollama, openai = LLMServerState(), LLMServerState()
    async with serve_app(llm_app(ollama)) as ollama_url, serve_app(llm_app(openai)) as openai_url:
        gateway = await build_gateway(gateway_settings(router_app.port, ollama_url, openai_url))
        try:
            yield Stack(gateway, ollama, openai)
        finally:
            await gateway.stop()


@pytest.fixture
async def stack_without_router() -> AsyncIterator[Stack]:
    ollama, openai = LLMServerState(), LLMServerState()
    async with serve_app(llm_app(ollama)) as ollama_url, serve_app(llm_app(openai)) as openai_url:
        settings = gateway_settings(closed_port(), ollama_url, openai_url)
        gateway = await build_gateway(settings)
        try:
            yield Stack(gateway, ollama, openai)
        finally:
            await gateway.stop()
