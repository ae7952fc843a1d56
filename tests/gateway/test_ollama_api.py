"""The gateway's Ollama API with the official `ollama` Python client: streaming and not, routed, listed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import ollama
import pytest

from tests.gateway.conftest import STRONG, WEAK, Stack

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[ollama.AsyncClient]:
    async with ollama.AsyncClient(host=f"http://127.0.0.1:{stack.gateway.http_port}") as client:
        yield client


async def test_chat_streams_through_the_router(client: ollama.AsyncClient, stack: Stack) -> None:
    parts = [part async for part in await client.chat(
        model="router-mf-50", messages=[{"role": "user", "content": "Say hello."}], stream=True,
        options={"temperature": 0.2, "num_predict": 9, "num_ctx": 2048},
    )]
    assert "".join(p.message.content or "" for p in parts) == "Hello, world!"
    assert parts[-1].done and parts[-1].done_reason == "stop" and parts[-1].eval_count == 4
    assert {p.model for p in parts} <= {STRONG, WEAK} and not any(p.done for p in parts[:-1])
    sent = stack.ollama.requests[-1]["body"]  # Ollama's options reach an Ollama upstream, mapped ones included
    assert sent["options"] == {"temperature": 0.2, "num_predict": 9, "num_ctx": 2048}


async def test_chat_and_generate_whole_with_format_and_images(client: ollama.AsyncClient, stack: Stack) -> None:
    answer = await client.chat(model=WEAK, messages=[{"role": "user", "content": "What is this?", "images": [PNG]}],
                               format="json")
    assert answer.message.content == "Hello, world!" and answer.done
    sent = stack.ollama.requests[-1]["body"]
    assert sent["format"] == "json" and sent["messages"][0]["images"] == [PNG]
    generated = await client.generate(model="router", prompt="Say hello.", system="Be brief.")
    assert generated.response == "Hello, world!" and generated.done
    assert stack.ollama.requests[-1]["body"]["messages"][0] == {"role": "system", "content": "Be brief."}
    # to an OpenAI-format upstream, as OpenAI's fields; Ollama's runtime options stay behind
    await client.chat(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], options={"num_ctx": 4096, "seed": 3})
    body = stack.openai.requests[-1]["body"]
    assert body["seed"] == 3 and "options" not in body


async def test_list_names_the_routers_and_the_served_models(client: ollama.AsyncClient) -> None:
    names = {m.model for m in (await client.list()).models}
    assert {"router", "router-mf-50", STRONG, WEAK, "gpt-4o-mini"} <= names


async def test_errors_come_in_ollama_s_shape(client: ollama.AsyncClient) -> None:
    with pytest.raises(ollama.ResponseError) as missing:
        await client.chat(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert missing.value.status_code == 404 and "no-such-model" in missing.value.error
    with pytest.raises(ollama.ResponseError) as shown:
        await client.show("no-such-model")
    assert shown.value.status_code == 404 and shown.value.error == "model 'no-such-model' not found"
    async with httpx.AsyncClient(base_url=str(client._client.base_url)) as raw:  # the ollama client would refuse to send it
        bad_call = await raw.post("/api/chat", json={"model": WEAK, "messages": [
            {"role": "assistant", "content": "", "tool_calls": [{"function": {}}]}]})
    assert bad_call.status_code == 400 and "function.name" in bad_call.json()["error"]


WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


@pytest.mark.parametrize("model", [WEAK, "gpt-4o-mini"], ids=["ollama-upstream", "openai-upstream"])
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
async def test_tool_calls_come_back_whole_with_arguments_as_objects(
    client: ollama.AsyncClient, stack: Stack, model: str, stream: bool
) -> None:
    stack.ollama.tool_call = stack.openai.tool_call = ("get_weather", '{"city": "Paris", "unit": "celsius"}')
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    if stream:
        parts = [p async for p in await client.chat(model=model, messages=messages, tools=[WEATHER], stream=True)]
        calls = [c for p in parts for c in (p.message.tool_calls or ())]
        assert parts[-1].done and parts[-1].done_reason == "stop"
    else:
        calls = list((await client.chat(model=model, messages=messages, tools=[WEATHER])).message.tool_calls or ())
    assert [(c.function.name, dict(c.function.arguments)) for c in calls] == [("get_weather", {"city": "Paris", "unit": "celsius"})]
    sent = (stack.ollama if model == WEAK else stack.openai).requests[-1]["body"]
    assert sent["tools"] == [WEATHER]


async def test_a_tool_answer_goes_back_in_each_upstream_s_shape(client: ollama.AsyncClient, stack: Stack) -> None:
    """The conversation after a call, as the ollama client sends it: the assistant's call, then the tool's answer."""
    history: list[dict[str, Any]] = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": "18 C, sunny", "tool_name": "get_weather"},
    ]
    await client.chat(model="gpt-4o-mini", messages=history, tools=[WEATHER])
    to_openai = stack.openai.requests[-1]["body"]["messages"]
    call = to_openai[1]["tool_calls"][0]
    assert call["type"] == "function" and call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert to_openai[2] == {"role": "tool", "content": "18 C, sunny", "tool_call_id": call["id"], "name": "get_weather"}
    await client.chat(model=WEAK, messages=history, tools=[WEATHER])
    to_ollama = stack.ollama.requests[-1]["body"]["messages"]
    assert to_ollama[1]["tool_calls"] == [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]
    assert to_ollama[2] == {"role": "tool", "content": "18 C, sunny", "tool_name": "get_weather"}


async def test_think_goes_to_ollama_as_is_and_thinking_comes_back(client: ollama.AsyncClient, stack: Stack) -> None:
    stack.ollama.thinking = stack.openai.thinking = ("Hmm, ", "a greeting.")
    parts = [p async for p in await client.chat(
        model=WEAK, messages=[{"role": "user", "content": "hi"}], think=True, stream=True
    )]
    assert "".join(p.message.thinking or "" for p in parts) == "Hmm, a greeting."
    assert "".join(p.message.content or "" for p in parts) == "Hello, world!"
    assert stack.ollama.requests[-1]["body"]["think"] is True
    whole = await client.chat(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], think="high")
    assert whole.message.thinking == "Hmm, a greeting." and whole.message.content == "Hello, world!"
    body = stack.openai.requests[-1]["body"]  # a level is OpenAI's reasoning_effort
    assert body["reasoning_effort"] == "high" and "think" not in body
    generated = await client.generate(model=WEAK, prompt="hi", think=True)
    assert generated.thinking == "Hmm, a greeting." and generated.response == "Hello, world!"


async def test_show_ps_and_load_answer_what_ollama_clients_ask_first(client: ollama.AsyncClient, stack: Stack) -> None:
    shown = await client.show(WEAK)
    assert shown.details is not None and shown.details.family == "ollama"
    assert shown.capabilities is not None and "completion" in shown.capabilities
    routed = await client.show("router-mf-50")
    assert routed.details is not None and routed.details.family == "router"
    assert (await client.ps()).models == []
    # `ollama run` loads the model with an empty chat first (and unloads with keep_alive 0): no upstream call
    loaded = await client.chat(model="router", messages=[])
    assert loaded.done and loaded.done_reason == "load" and loaded.message.content == ""
    unloaded = await client.generate(model=WEAK, keep_alive=0)
    assert unloaded.done and unloaded.done_reason == "unload"
    assert stack.ollama.requests == [] and stack.openai.requests == []


async def test_a_bug_or_a_broken_upstream_is_a_clear_error_never_a_traceback(
    client: ollama.AsyncClient, stack: Stack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    stack.ollama.cut_after = 2  # the upstream drops the connection after two chunks
    with pytest.raises(ollama.ResponseError):  # the stream's last chunk is Ollama's {"error": ...}
        async for _ in await client.chat(model=WEAK, messages=[{"role": "user", "content": "hi"}], stream=True):
            pass
    with pytest.raises(ollama.ResponseError) as whole:  # a whole answer gets the error's own status
        await client.chat(model=WEAK, messages=[{"role": "user", "content": "hi"}])
    assert whole.value.status_code == 502 and "broke the connection" in whole.value.error
    stack.ollama.cut_after = None

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug with secret internals")

    monkeypatch.setattr(stack.gateway.chat, "open", broken)
    with pytest.raises(ollama.ResponseError) as bug:
        await client.chat(model=WEAK, messages=[{"role": "user", "content": "hi"}])
    assert bug.value.status_code == 500 and "internal error (id " in bug.value.error
    assert "secret internals" not in bug.value.error
    error_id = bug.value.error.split("(id ")[1].split(")")[0]
    assert any(error_id in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("path", ["/api/chat", "/v1/chat/completions", "/v1/messages", "/v1/responses"])
async def test_every_chat_face_says_how_its_model_was_chosen(stack: Stack, path: str) -> None:
    """The same x-route-* headers on the Ollama, OpenAI, Anthropic and Responses faces."""
    body: dict[str, Any] = {"model": "router", "stream": False}
    if path == "/v1/responses":
        body["input"] = "hi"
    else:
        body["messages"] = [{"role": "user", "content": "hi"}]
    if path == "/v1/messages":
        body["max_tokens"] = 16
    async with httpx.AsyncClient(timeout=20) as http:
        answer = await http.post(f"http://127.0.0.1:{stack.gateway.http_port}{path}", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-route-model"] in (STRONG, WEAK) and answer.headers["x-route-routed"] == "true"
    assert float(answer.headers["x-route-score"]) > 0 and "x-route-threshold" in answer.headers
