"""The gateway's Ollama API with the official `ollama` Python client: streaming and not, routed, listed."""

from __future__ import annotations

from collections.abc import AsyncIterator

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
    with pytest.raises(ollama.ResponseError) as tools:
        await client.chat(model=WEAK, messages=[{"role": "user", "content": "hi"}],
                          tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}])
    assert tools.value.status_code == 400 and "/v1/chat/completions" in tools.value.error


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
