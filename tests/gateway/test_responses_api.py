"""OpenAI's Responses API on the gateway, driven by the official ``openai`` SDK's ``responses``, unchanged."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
from pydantic import BaseModel

from tests.gateway.conftest import WEAK, Stack

EXEC: Any = {"type": "function", "name": "exec_command", "description": "Run a command", "strict": False,
             "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]}}


@pytest.fixture
async def sdk(stack: Stack) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=stack.base_url, api_key="x", max_retries=0, timeout=20) as client:
        yield client


def upstream_requests(state) -> list[dict]:
    return [r["body"] for r in state.requests if r["path"].endswith(("/chat/completions", "/api/chat"))]


@pytest.mark.parametrize("model", [WEAK, "gpt-4o-mini"])
async def test_create_and_stream(stack: Stack, sdk: openai.AsyncOpenAI, model: str) -> None:
    whole = await sdk.responses.create(model=model, input="hi", instructions="Be brief.", max_output_tokens=50)
    assert whole.output_text == "Hello, world!" and whole.status == "completed" and whole.model == model
    assert whole.usage is not None and whole.usage.output_tokens == 4
    async with sdk.responses.stream(model=model, input=[{"role": "user", "content": "hi"}]) as stream:
        deltas = [e.delta async for e in stream if e.type == "response.output_text.delta"]
        final = await stream.get_final_response()
    assert "".join(deltas) == "Hello, world!" and final.output_text == "Hello, world!"
    sent = upstream_requests(stack.ollama if model == WEAK else stack.openai)[0]
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}


@pytest.mark.parametrize("model", [WEAK, "gpt-4o-mini"])
async def test_a_function_call_round_trip(stack: Stack, sdk: openai.AsyncOpenAI, model: str) -> None:
    stack.ollama.tool_call = stack.openai.tool_call = ("exec_command", '{"cmd": "ls"}')
    stack.ollama.tool_once = stack.openai.tool_once = True
    ask: Any = [{"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "You are Codex."}]},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "List the files"}]}]
    tools: Any = [EXEC, {"type": "web_search"}]
    async with sdk.responses.stream(model=model, input=ask, tools=tools, store=False) as stream:
        first = await stream.get_final_response()
    call = next(item for item in first.output if item.type == "function_call")
    assert call.name == "exec_command" and json.loads(call.arguments) == {"cmd": "ls"}
    follow: Any = [*ask, {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
                   {"type": "function_call_output", "call_id": call.call_id, "output": "hello.py\n"}]
    second = await sdk.responses.create(model=model, input=follow, tools=tools, store=False)
    assert second.output_text == "Hello, world!"
    sent = upstream_requests(stack.ollama if model == WEAK else stack.openai)[-1]
    assert [m["role"] for m in sent["messages"]] == (["system" if model == WEAK else "developer", "user", "assistant", "tool"])
    assert [t["function"]["name"] for t in sent["tools"]] == ["exec_command"]  # web_search is not the gateway's to run


async def test_json_schema_output_parses(stack: Stack, sdk: openai.AsyncOpenAI) -> None:
    class Capital(BaseModel):
        capital: str

    stack.openai.reply = ('{"capital": ', '"Paris"}')
    parsed = await sdk.responses.parse(model="gpt-4o-mini", input="Capital of France?", text_format=Capital)
    assert parsed.output_parsed == Capital(capital="Paris")
    sent = upstream_requests(stack.openai)[-1]
    assert sent["response_format"]["type"] == "json_schema" and sent["response_format"]["json_schema"]["name"] == "Capital"


async def test_every_stream_event_has_its_sequence_number_and_the_access_line_names_what_was_dropped(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway_service.access")
    body = {"model": WEAK, "stream": True, "input": "hi", "tools": [EXEC, {"type": "web_search"}], "store": False,
            "include": ["reasoning.encrypted_content"], "prompt_cache_key": "k", "client_metadata": {"a": "b"}}
    async with httpx.AsyncClient(timeout=20) as http:
        answer = await http.post(f"{stack.base_url}/responses", json=body)
    events = [json.loads(line[6:]) for line in answer.text.splitlines() if line.startswith("data: ")]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["type"] == "response.created" and events[-1]["type"] == "response.completed"
    line = [json.loads(r.getMessage()) for r in caplog.records if r.name == "gateway_service.access"][-1]
    assert line["api"] == "openai/responses" and "tools[web_search]" in line["adapted"]


@pytest.mark.parametrize(("body", "said"), [
    ({"model": WEAK, "input": [{"type": "function_call_output", "call_id": "c1", "output": "x"}]}, "no function_call"),
    ({"model": WEAK, "input": "hi", "previous_response_id": "resp_1"}, "[redis]"),  # no Redis here: said so
    ({"model": WEAK, "input": [{"type": "message", "role": "wizard", "content": "hi"}]}, "role"),
    ({"model": WEAK, "input": "hi", "text": {"format": {"type": "xml"}}}, "text.format"),
    ({"model": "gpt-9", "input": "hi"}, "not served here"),
])
async def test_bad_input_is_openai_s_error_json(stack: Stack, body: dict, said: str) -> None:
    async with httpx.AsyncClient(timeout=20) as http:
        answer = await http.post(f"{stack.base_url}/responses", json=body)
    assert answer.status_code in (400, 404), answer.text
    assert said in answer.json()["error"]["message"]


async def test_an_upstream_failure_mid_stream_is_response_failed(stack: Stack) -> None:
    stack.ollama.cut_after = 2
    async with httpx.AsyncClient(timeout=20) as http:
        answer = await http.post(f"{stack.base_url}/responses", json={"model": WEAK, "input": "hi", "stream": True})
    events = [json.loads(line[6:]) for line in answer.text.splitlines() if line.startswith("data: ")]
    assert events[-1]["type"] == "response.failed" and "upstream" in events[-1]["response"]["error"]["message"]


async def test_stored_conversations_continue_on_another_replica_and_stay_the_caller_s(
    router_app, tmp_path
) -> None:
    """With [redis]: previous_response_id continues a conversation on any replica, for the caller that stored it only;
    store: false keeps nothing."""
    from gateway_service.server import build_gateway
    from tests.gateway.conftest import gateway_settings
    from tests.http_servers import serve_app
    from tests.llm_servers import LLMServerState, llm_app
    from tests.redis_server import redis_server

    ollama, openai_ = LLMServerState(), LLMServerState()
    callers = [{"name": "team-a", "api_keys": ["key-a"]}, {"name": "team-b", "api_keys": ["key-b"]}]
    with redis_server(tmp_path) as redis:
        async with serve_app(llm_app(ollama)) as ollama_url, serve_app(llm_app(openai_)) as openai_url:
            settings = gateway_settings(router_app.port, ollama_url, openai_url, redis={"url": redis.url}, callers=callers)
            one, two = await build_gateway(settings), await build_gateway(settings)
            try:
                def sdk(gateway, key: str) -> openai.AsyncOpenAI:
                    return openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{gateway.http_port}/v1", api_key=key, max_retries=0)

                async with sdk(one, "key-a") as a_one, sdk(two, "key-a") as a_two, sdk(two, "key-b") as b_two:
                    first = await a_one.responses.create(model=WEAK, input="My name is Ada.", instructions="Be brief.")
                    assert first.to_dict()["store"] is True and first.id.startswith("resp_")
                    async with a_two.responses.stream(model=WEAK, input="What is my name?",
                                                      previous_response_id=first.id) as stream:
                        second = await stream.get_final_response()
                    sent = [m["content"] for m in ollama.requests[-1]["body"]["messages"]]
                    assert sent == ["My name is Ada.", "Hello, world!", "What is my name?"]  # instructions are not carried
                    third = await a_one.responses.create(model=WEAK, input="And again?", previous_response_id=second.id)
                    assert [m["content"] for m in ollama.requests[-1]["body"]["messages"]][-1] == "And again?"
                    assert len(ollama.requests[-1]["body"]["messages"]) == 5 and third.output_text
                    with pytest.raises(openai.BadRequestError, match="not found"):  # team-b cannot read team-a's
                        await b_two.responses.create(model=WEAK, input="Whose name?", previous_response_id=first.id)
                    unstored = await a_one.responses.create(model=WEAK, input="Forget this.", store=False)
                    assert unstored.to_dict()["store"] is False
                    with pytest.raises(openai.BadRequestError, match="not found"):
                        await a_two.responses.create(model=WEAK, input="?", previous_response_id=unstored.id)
            finally:
                await one.stop()
                await two.stop()


def test_openai_usage_details_reach_the_domain() -> None:
    """Cached prompt tokens and reasoning tokens, where an OpenAI-compatible server details them (Responses shows both)."""
    from gateway_service.upstreams.openai import _usage

    usage = _usage({"prompt_tokens": 120, "completion_tokens": 30, "prompt_tokens_details": {"cached_tokens": 100},
                    "completion_tokens_details": {"reasoning_tokens": 12}})
    assert (usage.cache_read_tokens, usage.reasoning_tokens, usage.total_tokens) == (100, 12, 150)
    assert _usage({"prompt_tokens": 1, "completion_tokens": 2, "prompt_tokens_details": None}).cache_read_tokens == 0
