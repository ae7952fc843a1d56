"""Sticky sessions (#37, optional): turns.session = "sticky" keeps an agent session on its model unless a new user
turn's score is past the threshold by turns.session_margin; per turn (the default) routes each turn afresh."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from gateway_service.server import GatewayApp, build_gateway
from tests.gateway.conftest import STRONG, WEAK, gateway_settings
from tests.http_servers import serve_app
from tests.llm_servers import LLMServerState, llm_app

HARD = "Prove that every planar graph is 5-colourable, then give a linear-time algorithm and prove its running time."


@asynccontextmanager
async def gateway_with(router_port: int, **turns: Any) -> AsyncIterator[GatewayApp]:
    async with serve_app(llm_app(LLMServerState())) as ollama_url, serve_app(llm_app(LLMServerState())) as openai_url:
        gateway = await build_gateway(gateway_settings(router_port, ollama_url, openai_url, turns=turns))
        try:
            yield gateway
        finally:
            await gateway.stop()


async def session(gateway: GatewayApp, turns: list[str], headers: dict[str, str]) -> list[tuple[str, str]]:
    """The (model, rule) each new user turn of one Claude Code session got."""
    messages: list[dict[str, Any]] = []
    got = []
    async with httpx.AsyncClient(timeout=30) as http:
        for words in turns:
            messages.append({"role": "user", "content": words})
            answer = await http.post(f"http://127.0.0.1:{gateway.http_port}/v1/messages", headers=headers,
                                     json={"model": "claude-opus-5-5", "max_tokens": 256, "messages": messages})
            assert answer.status_code == 200, answer.text[:300]
            got.append((answer.headers["x-route-model"], answer.headers.get("x-route-rule", "")))
            messages.append({"role": "assistant", "content": "Done."})
    return got


@pytest.mark.parametrize(("turns", "expected"), [
    ({}, [(STRONG, ""), (WEAK, "")]),  # the default: each turn routed afresh
    ({"session": "sticky", "session_margin": 1.0}, [(STRONG, ""), (STRONG, "session")]),
    ({"session": "sticky", "session_margin": 0.0}, [(STRONG, ""), (WEAK, "")]),  # "hi" is past the threshold
])
async def test_a_session_stays_on_its_model_within_the_margin(
    router_app, turns: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    async with gateway_with(router_app.port, **turns) as gateway:
        got = await session(gateway, [HARD, "hi"], {"x-claude-code-session-id": "3f2b-session"})
        assert got == expected


async def test_sessions_are_told_apart_and_codex_s_prompt_cache_key_names_one(router_app) -> None:
    async with gateway_with(router_app.port, session="sticky", session_margin=1.0) as gateway:
        await session(gateway, [HARD], {"x-claude-code-session-id": "one"})
        other = await session(gateway, ["hi"], {"x-claude-code-session-id": "two"})
        assert other == [(WEAK, "")]  # another session: its own model
        async with httpx.AsyncClient(timeout=30) as http:
            url = f"http://127.0.0.1:{gateway.http_port}/v1/responses"
            first = await http.post(url, json={"model": "router", "input": HARD, "prompt_cache_key": "codex-7"})
            second = await http.post(url, json={"model": "router", "prompt_cache_key": "codex-7", "input": [
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": HARD}]},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Done."}]},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
            ]})
        assert first.headers["x-route-model"] == STRONG
        assert (second.headers["x-route-model"], second.headers["x-route-rule"]) == (STRONG, "session")
