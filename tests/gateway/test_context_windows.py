"""Context windows (#37): each model's window is known, Ollama is told it (options.num_ctx), a routed request that does
not fit its model goes to one that holds it, and one nothing holds is a 400 naming the sizes. Never a silent cut."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from gateway_service.server import build_gateway
from tests.gateway.conftest import STRONG, WEAK, gateway_settings
from tests.http_servers import serve_app
from tests.llm_servers import LLMServerState, llm_app

WINDOWS = {WEAK: {"context_window": 4096}, STRONG: {"context_window": 65536}}
PARAGRAPH = "The service keeps a window of recent scores per caller and derives the threshold from it. " * 8


def conversation(tokens: int, last: str = "hi") -> list[dict[str, Any]]:
    """About ``tokens`` tokens (3 characters each, the gateway's estimate) of earlier turns, then ``last``."""
    turns: list[dict[str, Any]] = []
    while sum(len(m["content"]) for m in turns) < tokens * 3:
        turns += [{"role": "user", "content": PARAGRAPH * 20}, {"role": "assistant", "content": "Noted."}]
    return [*turns, {"role": "user", "content": last}]


@pytest.fixture
async def served(router_app) -> AsyncIterator[tuple[Any, LLMServerState]]:
    ollama = LLMServerState()
    async with serve_app(llm_app(ollama)) as ollama_url, serve_app(llm_app(LLMServerState())) as openai_url:
        gateway = await build_gateway(gateway_settings(router_app.port, ollama_url, openai_url, models=WINDOWS,
                                                       limits={"max_body_bytes": 8 * 2**20, "max_prompt_chars": 2_000_000}))
        try:
            yield gateway, ollama
        finally:
            await gateway.stop()


async def post(gateway: Any, path: str, body: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=60) as http:
        return await http.post(f"http://127.0.0.1:{gateway.http_port}{path}", json=body)


async def test_ollama_is_told_each_model_s_window(served: tuple[Any, LLMServerState]) -> None:
    gateway, ollama = served
    for model in (WEAK, STRONG):
        assert (await post(gateway, "/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": "hi"}]})).status_code == 200
        assert ollama.requests[-1]["body"]["options"]["num_ctx"] == WINDOWS[model]["context_window"]
    given = {"model": WEAK, "messages": [{"role": "user", "content": "hi"}], "options": {"num_ctx": 8192}}
    assert (await post(gateway, "/api/chat", given)).status_code == 200
    assert ollama.requests[-1]["body"]["options"]["num_ctx"] == 8192  # the client's own stands


@pytest.mark.parametrize("api", ["chat", "messages", "responses"])
async def test_a_long_conversation_ending_in_hi_goes_to_the_model_that_holds_it(
    served: tuple[Any, LLMServerState], api: str
) -> None:
    gateway, ollama = served
    messages = conversation(30_000)
    routes: dict[str, tuple[str, dict[str, Any]]] = {
        "chat": ("/v1/chat/completions", {"model": "router", "messages": messages}),
        "messages": ("/v1/messages", {"model": "router", "max_tokens": 512, "messages": messages}),
        "responses": ("/v1/responses", {"model": "router", "input": messages}),
    }
    path, body = routes[api]
    answer = await post(gateway, path, body)
    assert answer.status_code == 200, answer.text[:300]
    assert answer.headers["x-route-model"] == STRONG and answer.headers["x-route-rerouted-for"] == "context"
    assert ollama.requests[-1]["body"]["options"]["num_ctx"] == 65536


async def test_what_no_model_holds_is_a_400_naming_the_sizes(served: tuple[Any, LLMServerState]) -> None:
    gateway, _ = served
    too_long = await post(gateway, "/v1/chat/completions", {"model": "router", "messages": conversation(200_000)})
    assert too_long.status_code == 400
    said = too_long.json()["error"]["message"]
    assert "tokens" in said and "65536" in said and "4096" in said and "context_window" in said
    named = await post(gateway, "/v1/messages", {"model": WEAK, "max_tokens": 64, "messages": conversation(30_000)})
    assert named.status_code == 400 and named.json()["error"]["type"] == "invalid_request_error"  # a concrete model


async def test_show_reports_the_window_clients_read(served: tuple[Any, LLMServerState]) -> None:
    """/api/show: the model's window as its context length; a router name, the smallest it may route to."""
    gateway, _ = served
    shown = {name: (await post(gateway, "/api/show", {"model": name})).json()["model_info"] for name in (STRONG, "router")}
    assert shown[STRONG]["routestack.context_length"] == 65536 and shown["router"]["routestack.context_length"] == 4096


async def test_a_spent_caller_is_never_cut_to_the_weak_model_s_window(router_app) -> None:
    """Only the strong model holds the request and the caller's strong budget is spent: a 429 saying so, never the weak
    model silently truncating it."""
    async with serve_app(llm_app(LLMServerState())) as ollama_url, serve_app(llm_app(LLMServerState())) as openai_url:
        gateway = await build_gateway(gateway_settings(
            router_app.port, ollama_url, openai_url, models=WINDOWS,
            callers=[{"name": "team", "api_keys": ["sk-team-00000001"], "policy": "spent"}],
            caller_policies=[{"name": "spent", "strong_calls": 0}],
        ))
        try:
            async with httpx.AsyncClient(timeout=60) as http:
                answer = await http.post(f"http://127.0.0.1:{gateway.http_port}/v1/chat/completions",
                                         json={"model": "router", "messages": conversation(30_000)},
                                         headers={"authorization": "Bearer sk-team-00000001"})
        finally:
            await gateway.stop()
    assert answer.status_code == 429 and "context window of 4096" in answer.json()["error"]["message"]


async def test_an_ollama_model_left_out_of_models_has_the_window_ollama_reports(router_app) -> None:
    """No [models] at all: the loaded weak model runs with 4,096 (/api/ps), the strong one is not loaded and its
    Modelfile sets num_ctx 32768 (/api/show), a third only has its trained length. The gateway sends no num_ctx
    (the model runs as Ollama loaded it), yet a 30k-token conversation ending in hi is not cut to 4,096."""
    import asyncio

    ollama = LLMServerState(loaded={WEAK: 4096}, modelfile_num_ctx={STRONG: 32768}, trained={STRONG: 131072})
    async with serve_app(llm_app(ollama)) as ollama_url, serve_app(llm_app(LLMServerState())) as openai_url:
        gateway = await build_gateway(gateway_settings(router_app.port, ollama_url, openai_url,
                                                       limits={"max_body_bytes": 8 * 2**20}))
        try:
            for _ in range(100):  # the first health check runs at start
                if gateway.chat.dispatch.known_windows().keys() >= {WEAK, STRONG}:
                    break
                await asyncio.sleep(0.05)
            assert gateway.chat.dispatch.known_windows() == {WEAK: 4096, STRONG: 32768}
            answer = await post(gateway, "/v1/chat/completions", {"model": "router", "messages": conversation(20_000)})
            assert answer.status_code == 200, answer.text[:300]
            assert answer.headers["x-route-model"] == STRONG and answer.headers["x-route-rerouted-for"] == "context"
            assert "num_ctx" not in ollama.requests[-1]["body"].get("options", {})
            shown = await post(gateway, "/api/show", {"model": WEAK})
            assert shown.json()["model_info"]["routestack.context_length"] == 4096
            too_long = await post(gateway, "/v1/chat/completions", {"model": WEAK, "messages": conversation(20_000)})
            assert too_long.status_code == 400 and "4096" in too_long.json()["error"]["message"]
            assert sorted(set(ollama.shown)) == [STRONG]  # /api/show asked once for the model not loaded
        finally:
            await gateway.stop()
