"""An Anthropic-API upstream (``provider = "anthropic"``) beside Ollama: any client API can reach a Claude model.

Its fake speaks Anthropic's stream byte for byte (tests/llm_servers.py); the gateway sends its key as
``x-api-key`` with ``anthropic-version``, renders the domain in Anthropic's shape (tool results as
``tool_result`` blocks, Anthropic's own signed thinking kept, anyone else's dropped) and reads the events
back into deltas, tool calls, usage and a finish.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import openai
import pytest

from gateway_service.server import build_gateway
from tests.gateway.conftest import WEAK, Stack, gateway_settings
from tests.http_servers import serve_app
from tests.llm_servers import LLMServerState, llm_app

CLAUDE = "claude-sonnet-test"
BASH: Any = {"name": "Bash", "description": "Run a shell command",
             "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}


@pytest.fixture
async def hosted(router_app, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Stack, LLMServerState]]:
    monkeypatch.setenv("TEST_ANTHROPIC_KEY", "sk-ant-test")
    ollama, openai_, claude = LLMServerState(), LLMServerState(), LLMServerState(models=(CLAUDE,))
    async with serve_app(llm_app(ollama)) as ollama_url, serve_app(llm_app(openai_)) as openai_url, \
            serve_app(llm_app(claude)) as claude_url:
        settings = gateway_settings(router_app.port, ollama_url, openai_url)
        upstreams = [u.model_dump() for u in settings.upstreams] + [
            {"name": "claude", "provider": "anthropic", "base_url": claude_url, "models": [CLAUDE],
             "api_key_env": "TEST_ANTHROPIC_KEY"}]
        gateway = await build_gateway(gateway_settings(router_app.port, ollama_url, openai_url, upstreams=upstreams))
        try:
            yield Stack(gateway, ollama, openai_), claude
        finally:
            await gateway.stop()


def sent(state: LLMServerState) -> dict[str, Any]:
    return state.requests[-1]


async def test_an_openai_client_reaches_claude_with_x_api_key(hosted: tuple[Stack, LLMServerState]) -> None:
    stack, claude = hosted
    async with openai.AsyncOpenAI(base_url=stack.base_url, api_key="x", max_retries=0) as sdk:
        whole = await sdk.chat.completions.create(model=CLAUDE, max_tokens=100, messages=[
            {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}])
        stream = await sdk.chat.completions.create(model=CLAUDE, messages=[{"role": "user", "content": "hi"}], stream=True,
                                                   stream_options={"include_usage": True})
        chunks = [chunk async for chunk in stream]
    assert whole.choices[0].message.content == "Hello, world!" and whole.choices[0].finish_reason == "stop"
    assert whole.usage is not None and whole.usage.completion_tokens == 4
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello, world!"
    request = claude.requests[0]
    assert request["path"] == "/v1/messages" and request["headers"]["x-api-key"] == "sk-ant-test"
    assert request["headers"]["anthropic-version"] == "2023-06-01" and "authorization" not in request["headers"]
    assert request["body"]["system"] == [{"type": "text", "text": "Be brief."}] and request["body"]["stream"] is True
    assert claude.requests[1]["body"]["max_tokens"] == 4096  # Anthropic requires one; the stream set none


async def test_a_tool_loop_from_an_openai_client_becomes_tool_result_blocks(hosted: tuple[Stack, LLMServerState]) -> None:
    stack, claude = hosted
    claude.tool_call, claude.tool_once = ("Bash", '{"command": "ls"}'), True
    tools: Any = [{"type": "function", "function": {"name": "Bash", "parameters": BASH["input_schema"]}}]
    ask: Any = [{"role": "user", "content": "List the files"}]
    async with openai.AsyncOpenAI(base_url=stack.base_url, api_key="x", max_retries=0) as sdk:
        first = await sdk.chat.completions.create(model=CLAUDE, messages=ask, tools=tools, tool_choice="required")
        call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
        assert first.choices[0].finish_reason == "tool_calls" and call.function.name == "Bash"  # type: ignore[union-attr]
        assert json.loads(call.function.arguments) == {"command": "ls"}  # type: ignore[union-attr]
        assert sent(claude)["body"]["tool_choice"] == {"type": "any"}
        follow: Any = [*ask, first.choices[0].message.model_dump(exclude_none=True),
                       {"role": "tool", "tool_call_id": call.id, "content": "hello.py"}]
        second = await sdk.chat.completions.create(model=CLAUDE, messages=follow, tools=tools)
    assert second.choices[0].message.content == "Hello, world!"
    messages = sent(claude)["body"]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[1]["content"] == [{"type": "tool_use", "id": call.id, "name": "Bash", "input": {"command": "ls"}}]
    assert messages[2]["content"] == [{"type": "tool_result", "tool_use_id": call.id,
                                       "content": [{"type": "text", "text": "hello.py"}]}]


async def test_claude_code_to_claude_keeps_anthropic_s_signed_thinking(hosted: tuple[Stack, LLMServerState]) -> None:
    """Anthropic to Anthropic: thinking streams back with its signature, and goes back to Claude when sent again;
    routed to Ollama instead, it is dropped (Anthropic's alone)."""
    stack, claude = hosted
    claude.thinking = ("Let me think", " about it.")
    root = stack.base_url.removesuffix("/v1")
    async with anthropic.AsyncAnthropic(base_url=root, api_key="x", max_retries=0) as client:
        async with client.messages.stream(model=CLAUDE, max_tokens=2048, thinking={"type": "enabled", "budget_tokens": 1024},
                                          messages=[{"role": "user", "content": "hi"}]) as stream:
            answer = await stream.get_final_message()
        thinking = answer.content[0]
        assert thinking.type == "thinking" and thinking.thinking == "Let me think about it."
        assert thinking.signature == "EqQBCgIYAhIM1gbcDa9GJwZA2b3h"
        assert sent(claude)["body"]["thinking"] == {"type": "enabled", "budget_tokens": 1024}
        again: Any = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": [b.model_dump() for b in answer.content]},
                      {"role": "user", "content": "more"}]
        await client.messages.create(model=CLAUDE, max_tokens=64, messages=again)
        assert sent(claude)["body"]["messages"][1]["content"][0] == {
            "type": "thinking", "thinking": "Let me think about it.", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3h"}
        await client.messages.create(model=WEAK, max_tokens=64, messages=again)
    assert stack.ollama.requests[-1]["body"]["messages"][1] == {"role": "assistant", "content": "Hello, world!"}


async def test_responses_and_ollama_clients_reach_claude_too(hosted: tuple[Stack, LLMServerState]) -> None:
    stack, claude = hosted
    async with openai.AsyncOpenAI(base_url=stack.base_url, api_key="x", max_retries=0) as sdk:
        response = await sdk.responses.create(model=CLAUDE, input="hi", instructions="Be brief.")
    assert response.output_text == "Hello, world!" and response.usage is not None
    assert response.usage.input_tokens_details.cached_tokens == 3
    assert sent(claude)["body"]["system"] == [{"type": "text", "text": "Be brief."}]


async def test_an_overloaded_claude_falls_back_and_a_mid_stream_error_is_named(hosted: tuple[Stack, LLMServerState]) -> None:
    stack, claude = hosted
    claude.fail_status = 529
    async with openai.AsyncOpenAI(base_url=stack.base_url, api_key="x", max_retries=0) as sdk:
        answer = await sdk.chat.completions.with_raw_response.create(model=CLAUDE, messages=[{"role": "user", "content": "hi"}])
    assert answer.headers["x-route-fallback"] == "true" and answer.headers["x-route-model"] == WEAK  # before its first token
    claude.fail_status, claude.cut_after = None, 2
    async with openai.AsyncOpenAI(base_url=stack.base_url, api_key="x", max_retries=0) as sdk:
        stream = await sdk.chat.completions.create(model=CLAUDE, messages=[{"role": "user", "content": "hi"}], stream=True)
        with pytest.raises(openai.APIError) as broken:
            async for _ in stream:
                pass
    assert "upstream 'claude' (anthropic)" in str(broken.value)
