"""Clients as they are: tools, structured output and images through the gateway, with the official SDK.

Test upstreams speak the exact wire formats, tool calls included: OpenAI streams a call as its
name, then argument fragments, then ``finish_reason: tool_calls``; Ollama sends the whole call
in one message with the arguments as an object. Nothing the client sends is dropped in silence:
OpenAI-compatible upstreams get every field as sent, Ollama gets what maps, a forced tool choice
emulated, and the access line names what it dropped; content it cannot take is a 400 naming it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest

from tests.gateway.conftest import WEAK, Stack

TOOLS: Any = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}}]
ARGUMENTS = '{"city": "Paris", "unit": "celsius"}'
ASK: Any = [{"role": "user", "content": "What is the weather in Paris?"}]
PNG = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


@pytest.fixture
async def sdk(stack: Stack) -> AsyncIterator[openai.AsyncOpenAI]:
    stack.ollama.tool_call = stack.openai.tool_call = ("get_weather", ARGUMENTS)
    async with openai.AsyncOpenAI(base_url=stack.base_url, api_key="x", max_retries=0, timeout=20) as client:
        yield client


def chat_requests(state) -> list[dict]:
    return [r["body"] for r in state.requests if r["path"].endswith(("/chat/completions", "/api/chat"))]


@pytest.mark.parametrize("model", ["gpt-4o-mini", WEAK, "router-mf-50"])  # OpenAI-format, Ollama, routed (to Ollama)
async def test_streamed_tool_calls_are_assembled_by_the_sdk(stack: Stack, sdk: openai.AsyncOpenAI, model: str) -> None:
    async with sdk.chat.completions.stream(model=model, messages=ASK, tools=TOOLS, tool_choice="auto") as stream:
        final = await stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls: Any = choice.message.tool_calls
    (call,) = calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == json.loads(ARGUMENTS)
    assert call.id and call.type == "function"
    sent = chat_requests(stack.openai if model == "gpt-4o-mini" else stack.ollama)[-1]
    assert sent["tools"] == TOOLS  # both take OpenAI's function-tool shape
    if model == "gpt-4o-mini":
        assert sent["tool_choice"] == "auto"


@pytest.mark.parametrize("model", ["gpt-4o-mini", WEAK])
async def test_a_whole_response_carries_the_tool_calls_and_the_next_turn_reaches_the_upstream(
    stack: Stack, sdk: openai.AsyncOpenAI, model: str
) -> None:
    response = await sdk.chat.completions.create(model=model, messages=ASK, tools=TOOLS)
    message = response.choices[0].message
    assert response.choices[0].finish_reason == "tool_calls" and message.content is None
    calls: Any = message.tool_calls
    call = calls[0]
    assert json.loads(call.function.arguments) == json.loads(ARGUMENTS)
    follow_up: Any = [*ASK, message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "name": "get_weather", "content": '{"temp": 18}'}]
    stack.ollama.tool_call = stack.openai.tool_call = None
    answer = await sdk.chat.completions.create(model=model, messages=follow_up, tools=TOOLS)
    assert answer.choices[0].message.content == "Hello, world!"
    sent = chat_requests(stack.openai if model == "gpt-4o-mini" else stack.ollama)[-1]["messages"]
    if model == "gpt-4o-mini":  # as the client sent it
        assert sent[1]["tool_calls"][0]["id"] == call.id and sent[2]["tool_call_id"] == call.id
    else:  # in Ollama's shape: arguments as an object, the tool's name on its answer
        assert sent[1]["tool_calls"] == [{"function": {"name": "get_weather", "arguments": json.loads(ARGUMENTS)}}]
        assert sent[2] == {"role": "tool", "content": '{"temp": 18}', "tool_name": "get_weather"}


async def test_structured_output_and_images_reach_each_upstream_in_its_own_shape(
    stack: Stack, sdk: openai.AsyncOpenAI
) -> None:
    schema = {"type": "object", "properties": {"capital": {"type": "string"}}, "required": ["capital"]}
    response_format: Any = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}
    image_message: Any = [{"role": "user", "content": [{"type": "text", "text": "What is in this picture?"},
                                                  {"type": "image_url", "image_url": {"url": PNG}}]}]
    await sdk.chat.completions.create(model="gpt-4o-mini", messages=image_message, response_format=response_format,
                                      logprobs=True, top_logprobs=2, user="u-42")
    await sdk.chat.completions.create(model=WEAK, messages=image_message, response_format=response_format, user="u-42")
    openai_sent, ollama_sent = chat_requests(stack.openai)[-1], chat_requests(stack.ollama)[-1]
    assert openai_sent["response_format"] == response_format and openai_sent["messages"] == image_message
    assert openai_sent["logprobs"] is True and openai_sent["top_logprobs"] == 2 and openai_sent["user"] == "u-42"
    assert ollama_sent["format"] == schema
    assert ollama_sent["messages"] == [{"role": "user", "content": "What is in this picture?", "images": [PNG.split(",", 1)[1]]}]


WIND: Any = {"type": "function", "function": {"name": "get_wind", "parameters": {"type": "object", "properties": {}}}}


@pytest.mark.parametrize(("choice", "tools_sent", "asked"), [
    ({"type": "function", "function": {"name": "get_weather"}}, ["get_weather"], "calling the tool get_weather"),
    ("required", ["get_weather", "get_wind"], "calling one of the tools"),
    ("none", [], None),
])
async def test_a_forced_tool_choice_is_emulated_for_ollama_never_refused(
    stack: Stack, sdk: openai.AsyncOpenAI, caplog: pytest.LogCaptureFixture, choice: Any, tools_sent: list, asked: str | None
) -> None:
    """Ollama cannot force a tool: ``none`` sends no tools, a named tool goes alone, ``required`` asks for one in
    a system message; the access line says so. OpenAI-compatible upstreams get the choice as sent."""
    caplog.set_level(logging.INFO, logger="gateway_service.access")
    await sdk.chat.completions.create(model=WEAK, messages=ASK, tools=[*TOOLS, WIND], tool_choice=choice)
    sent = chat_requests(stack.ollama)[-1]
    assert [t["function"]["name"] for t in sent.get("tools", [])] == tools_sent
    instructions = [m["content"] for m in sent["messages"] if m["role"] == "system"]
    assert (asked is None and not instructions) or (asked is not None and asked in instructions[0])
    line = [json.loads(r.getMessage()) for r in caplog.records if r.name == "gateway_service.access"][-1]
    mode = choice if isinstance(choice, str) else "tool"
    assert line["adapted"] == [f"tool_choice={mode} emulated"]
    await sdk.chat.completions.create(model="gpt-4o-mini", messages=ASK, tools=TOOLS, tool_choice=choice)
    assert chat_requests(stack.openai)[-1]["tool_choice"] == choice


async def test_a_field_ollama_lacks_is_dropped_by_name_in_the_access_line(
    stack: Stack, sdk: openai.AsyncOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    """As Ollama's own OpenAI endpoint: a field it has no use for is ignored, not refused; the access line names it."""
    caplog.set_level(logging.INFO, logger="gateway_service.access")
    extra = {"logit_bias": {"50256": -100}}
    answer = await sdk.chat.completions.create(model=WEAK, messages=ASK, extra_body=extra)
    assert answer.choices[0].message.content
    assert "logit_bias" not in chat_requests(stack.ollama)[-1] and "logit_bias" not in json.dumps(chat_requests(stack.ollama)[-1])
    line = [json.loads(r.getMessage()) for r in caplog.records if r.name == "gateway_service.access"][-1]
    assert line["adapted"] == ["dropped: logit_bias"]
    await sdk.chat.completions.create(model="gpt-4o-mini", messages=ASK, extra_body=extra)  # passed on as sent
    assert {k: chat_requests(stack.openai)[-1][k] for k in extra} == extra


async def test_an_http_image_url_cannot_go_to_ollama_and_says_so(stack: Stack, sdk: openai.AsyncOpenAI) -> None:
    message: Any = [{"role": "user", "content": [{"type": "text", "text": "Describe"},
                                            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]
    with pytest.raises(openai.BadRequestError, match="data URLs only"):
        await sdk.chat.completions.create(model=WEAK, messages=message)


async def test_an_upstream_that_reports_no_usage_gives_none_never_zero(stack: Stack, sdk: openai.AsyncOpenAI) -> None:
    stack.openai.no_usage = True  # as llama.cpp's server streams
    whole = await sdk.chat.completions.create(model="gpt-4o-mini", messages=ASK)
    assert whole.choices[0].message.content == "Hello, world!" and whole.usage is None
    stream = await sdk.chat.completions.create(
        model="gpt-4o-mini", messages=ASK, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[-1].choices == [] and chunks[-1].usage is None  # the usage chunk is there, saying "unknown"
    stack.openai.no_usage = False
    counted = await sdk.chat.completions.create(model="gpt-4o-mini", messages=ASK)
    assert counted.usage is not None and counted.usage.completion_tokens == 4


async def test_the_readme_s_tool_call_example_runs(stack: Stack, sdk: openai.AsyncOpenAI) -> None:
    """README "Use it": the synchronous SDK, a tool, `router-mf-50`, the SDK's stream helper."""
    import asyncio

    def readme_example() -> tuple[str, str]:
        client = openai.OpenAI(base_url=stack.base_url, api_key="unused", max_retries=0)
        tools: Any = [{"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
        with client.chat.completions.stream(model="router-mf-50", tools=tools,
                                            messages=[{"role": "user", "content": "Weather in Paris?"}]) as stream:
            calls: Any = stream.get_final_completion().choices[0].message.tool_calls
        client.close()
        return calls[0].function.name, calls[0].function.arguments

    name, arguments = await asyncio.to_thread(readme_example)
    assert name == "get_weather" and json.loads(arguments)["city"] == "Paris"
