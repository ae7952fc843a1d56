"""Anthropic's Messages API on the gateway, driven by the official ``anthropic`` SDK, unchanged.

The upstreams are the byte-exact test servers (Ollama's NDJSON, OpenAI's SSE): the Messages request is
parsed into the gateway's domain and rendered into each upstream's own shape, and the answer comes back
as Anthropic's events and bodies.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx
import pytest

from tests.gateway.conftest import STRONG, WEAK, Stack

BASH: Any = {"name": "Bash", "description": "Run a shell command",
             "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


@pytest.fixture
async def claude(stack: Stack) -> AsyncIterator[anthropic.AsyncAnthropic]:
    root = stack.base_url.removesuffix("/v1")
    async with anthropic.AsyncAnthropic(base_url=root, api_key="unused", max_retries=0, timeout=20) as client:
        yield client


def upstream_requests(state) -> list[dict]:
    return [r["body"] for r in state.requests if r["path"].endswith(("/chat/completions", "/api/chat"))]


@pytest.mark.parametrize("model", [WEAK, "gpt-4o-mini"])
async def test_create_and_stream_answer_in_anthropic_s_shape(
    stack: Stack, claude: anthropic.AsyncAnthropic, model: str
) -> None:
    message = await claude.messages.create(model=model, max_tokens=64, messages=[{"role": "user", "content": "hi"}])
    assert message.type == "message" and message.role == "assistant" and message.model == model
    assert [b.type for b in message.content] == ["text"] and message.content[0].text == "Hello, world!"  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn" and message.usage.output_tokens == 4
    async with claude.messages.stream(model=model, max_tokens=64, system="Be brief.",
                                      messages=[{"role": "user", "content": "hi"}]) as stream:
        texts = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    assert "".join(texts) == "Hello, world!" and final.stop_reason == "end_turn"
    sent = upstream_requests(stack.ollama if model == WEAK else stack.openai)[-1]
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert (sent["options"]["num_predict"] if model == WEAK else sent["max_tokens"]) == 64


@pytest.mark.parametrize("model", [WEAK, "gpt-4o-mini"])
async def test_a_tool_round_trip(stack: Stack, claude: anthropic.AsyncAnthropic, model: str) -> None:
    """The model calls Bash (tool_use, stop_reason tool_use); the client sends its tool_result; text comes back.
    The tool result reaches the upstream as a tool message, never as the user's words."""
    stack.ollama.tool_call = stack.openai.tool_call = ("Bash", '{"command": "ls"}')
    stack.ollama.tool_once = stack.openai.tool_once = True
    ask: Any = [{"role": "user", "content": "List the files"}]
    async with claude.messages.stream(model=model, max_tokens=256, tools=[BASH], messages=ask) as stream:
        first = await stream.get_final_message()
    assert first.stop_reason == "tool_use"
    use = next(b for b in first.content if b.type == "tool_use")
    assert use.name == "Bash" and use.input == {"command": "ls"} and use.id.startswith("toolu_")
    follow: Any = [*ask, {"role": "assistant", "content": [b.model_dump() for b in first.content]},
                   {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "hello.py",
                                                 "is_error": False, "cache_control": {"type": "ephemeral"}}]}]
    second = await claude.messages.create(model=model, max_tokens=256, tools=[BASH], messages=follow)
    assert second.stop_reason == "end_turn" and second.content[0].text == "Hello, world!"  # type: ignore[union-attr]
    sent = upstream_requests(stack.ollama if model == WEAK else stack.openai)[-1]
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "tool"]
    assert sent["messages"][2]["content"] == "hello.py"
    if model != WEAK:
        assert sent["messages"][2]["tool_call_id"] == use.id == sent["messages"][1]["tool_calls"][0]["id"]


async def test_a_forced_tool_and_structured_output_reach_ollama_emulated(stack: Stack, claude: anthropic.AsyncAnthropic) -> None:
    """tool_choice {"type": "tool"} (the SDK's usual way to get JSON) is emulated for Ollama, never refused;
    output_config.format becomes Ollama's format; thinking and effort become its think switch."""
    stack.ollama.tool_call = ("Bash", '{"command": "ls"}')
    other: Any = {"name": "Read", "input_schema": {"type": "object", "properties": {}}}
    await claude.messages.create(model=WEAK, max_tokens=64, tools=[BASH, other], tool_choice={"type": "tool", "name": "Bash"},
                                 messages=[{"role": "user", "content": "go"}])
    sent = upstream_requests(stack.ollama)[-1]
    assert [t["function"]["name"] for t in sent["tools"]] == ["Bash"]
    schema = {"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]}
    await claude.messages.create(model=WEAK, max_tokens=64, messages=[{"role": "user", "content": "name it"}],
                                 thinking={"type": "enabled", "budget_tokens": 1024},
                                 extra_body={"output_config": {"effort": "low", "format": {"type": "json_schema", "schema": schema}}})
    sent = upstream_requests(stack.ollama)[-1]
    assert sent["format"] == schema and sent["think"] == "low"


async def test_images_thinking_and_system_messages_inside_messages(stack: Stack, claude: anthropic.AsyncAnthropic) -> None:
    messages: Any = [
        {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                     {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}]},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "hmm", "signature": "c2ln"},
                                          {"type": "redacted_thinking", "data": "ZW5j"}, {"type": "text", "text": "A dot."}]},
        {"role": "system", "content": "# Environment\nLinux"},  # as Claude Code sends one
        {"role": "user", "content": "And now?"},
    ]
    await claude.messages.create(model=WEAK, max_tokens=64, messages=messages)
    sent = upstream_requests(stack.ollama)[-1]
    assert sent["messages"][0] == {"role": "user", "content": "What is this?", "images": [PNG]}
    assert sent["messages"][1] == {"role": "assistant", "content": "A dot."}  # its reasoning is Anthropic's alone
    assert sent["messages"][2] == {"role": "system", "content": "# Environment\nLinux"}


async def test_count_tokens_and_the_model_list(stack: Stack, claude: anthropic.AsyncAnthropic) -> None:
    counted = await claude.messages.count_tokens(model="router", system="Be brief.", tools=[BASH],
                                                 messages=[{"role": "user", "content": "x" * 400}])
    assert counted.input_tokens > 100
    models = [m.id async for m in claude.models.list()]
    assert {"router", STRONG, WEAK} <= set(models)


async def test_claude_s_own_model_names_are_routed_and_an_unmapped_name_is_anthropic_s_404(
    stack: Stack, claude: anthropic.AsyncAnthropic
) -> None:
    """Claude Code names its own models (claude-opus-5-5): the default alias claude-* routes them."""
    routed = await claude.messages.with_raw_response.create(
        model="claude-opus-5-5", max_tokens=32, messages=[{"role": "user", "content": "hi"}])
    assert routed.headers["x-route-routed"] == "true" and routed.headers["request-id"]
    with pytest.raises(anthropic.NotFoundError) as missing:
        await claude.messages.create(model="gpt-9", max_tokens=32, messages=[{"role": "user", "content": "hi"}])
    body = missing.value.body
    assert isinstance(body, dict) and body["type"] == "error" and body["error"]["type"] == "not_found_error"
    assert "router" in body["error"]["message"] and "model_aliases" in body["error"]["message"]


@pytest.mark.parametrize(("body", "status", "said"), [
    ({"model": WEAK, "messages": [{"role": "user", "content": "hi"}]}, 400, "max_tokens"),
    ({"model": WEAK, "max_tokens": 9, "messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x",
                                                                                    "content": "1"}]}]}, 400, "no earlier tool_use"),
    ({"model": WEAK, "max_tokens": 9, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": base64.b64encode(b"not an image").decode()}}]}]},
     400, "not a base64 image"),
    ({"model": WEAK, "max_tokens": 9, "messages": [{"role": "user", "content": [{"type": "text"}]}]}, 400, "needs text"),
    ({"model": WEAK, "max_tokens": 9, "messages": [{"role": "wizard", "content": "hi"}]}, 400, "role"),
    ({"model": WEAK, "max_tokens": 9, "tools": [BASH] * 1001, "messages": [{"role": "user", "content": "hi"}]}, 413, "max_tools"),
])
async def test_bad_input_is_anthropic_s_error_with_the_right_status(stack: Stack, body: dict, status: int, said: str) -> None:
    url = f"http://127.0.0.1:{stack.gateway.http_port}/v1/messages"
    async with httpx.AsyncClient(timeout=20) as http:
        answer = await http.post(url, json=body, headers={"anthropic-version": "2023-06-01"})
    assert answer.status_code == status, answer.text
    error = answer.json()
    assert error["type"] == "error" and error["error"]["type"] == ("request_too_large" if status == 413 else "invalid_request_error")
    assert said in error["error"]["message"] and answer.headers["request-id"] == error["request_id"]


async def test_a_ten_megabyte_body_is_refused_before_it_is_read(stack: Stack) -> None:
    """Its declared length is past limits.max_body_bytes: Anthropic's 413 at once, the body never read."""
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.gateway.http_port)
    writer.write(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 10000000\r\n\r\n{\"model\": ")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    error = json.loads(await asyncio.wait_for(reader.readexactly(length), timeout=10))
    writer.close()
    assert head.startswith(b"HTTP/1.1 413") and error["error"]["type"] == "request_too_large"
    assert "max_body_bytes" in error["error"]["message"]


async def test_an_upstream_failure_is_an_error_event_after_the_stream_began(
    stack: Stack, claude: anthropic.AsyncAnthropic
) -> None:
    stack.ollama.cut_after = 2
    with pytest.raises(anthropic.APIStatusError) as failed:
        async with claude.messages.stream(model=WEAK, max_tokens=64, messages=[{"role": "user", "content": "hi"}]) as stream:
            async for _ in stream:
                pass
    assert "upstream" in str(failed.value.message) or "upstream" in json.dumps(failed.value.body)


async def test_keys_are_read_from_x_api_key_and_the_access_line_names_the_api(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway_service.access")
    url = f"http://127.0.0.1:{stack.gateway.http_port}/v1/messages?beta=true"
    body = {"model": WEAK, "max_tokens": 9, "messages": [{"role": "user", "content": "hi"}], "context_management": {"edits": []},
            "metadata": {"user_id": "u"}, "unknown_field": 1}
    async with httpx.AsyncClient(timeout=20) as http:
        answer = await http.post(url, json=body, headers={"x-api-key": "k", "anthropic-beta": "a-beta-nobody-knows-2099-01-01"})
    assert answer.status_code == 200, answer.text
    line = [json.loads(r.getMessage()) for r in caplog.records if r.name == "gateway_service.access"][-1]
    assert line["api"] == "anthropic/messages" and line["status"] == 200 and line["model"] == WEAK


async def test_an_agent_s_tool_loop_stays_on_its_turn_s_model_and_counts_against_its_caller(
    router_app, caplog: pytest.LogCaptureFixture
) -> None:
    """Messages requests get what chat completions get: routing, the tool loop's turn, the caller's limits (429 in
    Anthropic's shape with retry-after), the access line with the caller and the api."""
    from gateway_service.server import build_gateway
    from tests.gateway.conftest import gateway_settings
    from tests.http_servers import serve_app
    from tests.llm_servers import LLMServerState, llm_app

    caplog.set_level(logging.INFO, logger="gateway_service.access")
    ollama, openai_ = LLMServerState(tool_call=("Bash", '{"command": "ls"}'), tool_once=True), LLMServerState()
    callers = [{"name": "agents", "api_keys": ["k-agents"], "policy": "tight"}]
    policies = [{"name": "tight", "requests_per_minute": 2}]
    async with serve_app(llm_app(ollama)) as ollama_url, serve_app(llm_app(openai_)) as openai_url:
        gateway = await build_gateway(gateway_settings(router_app.port, ollama_url, openai_url, callers=callers,
                                                       caller_policies=policies))
        try:
            root = f"http://127.0.0.1:{gateway.http_port}"
            async with anthropic.AsyncAnthropic(base_url=root, api_key="k-agents", max_retries=0) as client:
                ask: Any = [{"role": "user", "content": "Prove that there are infinitely many primes, then run ls."}]
                first = await client.messages.with_raw_response.create(model="claude-opus-5-5", max_tokens=64,
                                                                       tools=[BASH], messages=ask)
                message = await first.parse()
                use = next(b for b in message.content if b.type == "tool_use")
                follow: Any = [*ask, {"role": "assistant", "content": [b.model_dump() for b in message.content]},
                               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "a.py"}]}]
                second = await client.messages.with_raw_response.create(model="claude-opus-5-5", max_tokens=64,
                                                                        tools=[BASH], messages=follow)
                assert second.headers["x-route-rule"] == "turn"
                assert second.headers["x-route-model"] == first.headers["x-route-model"]
                with pytest.raises(anthropic.RateLimitError) as limited:
                    await client.messages.create(model="claude-opus-5-5", max_tokens=64, messages=ask)
            assert limited.value.response.headers["retry-after"]
            body = limited.value.body
            assert isinstance(body, dict) and body["error"]["type"] == "rate_limit_error" and "agents" in body["error"]["message"]
        finally:
            await gateway.stop()
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "gateway_service.access"]
    assert [(line["api"], line["caller"], line["status"]) for line in lines[-3:]] == [
        ("anthropic/messages", "agents", 200), ("anthropic/messages", "agents", 200), ("anthropic/messages", "agents", 429)]
