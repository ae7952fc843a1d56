"""The gateway's gRPC API: gateway.v1.GatewayService/Chat streams, with the same routing and faults."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from google.protobuf.struct_pb2 import Struct, Value
from grpc_health.v1 import health_pb2, health_pb2_grpc

from routing_api.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from tests.gateway.conftest import STRONG, WEAK, Stack


@pytest.fixture
async def stub(stack: Stack) -> AsyncIterator[gateway_pb2_grpc.GatewayServiceStub]:
    async with grpc.aio.insecure_channel(stack.grpc_address) as channel:
        yield gateway_pb2_grpc.GatewayServiceStub(channel)


def chat(model: str, text: str = "Say hello.", **fields: object) -> gateway_pb2.ChatRequest:
    return gateway_pb2.ChatRequest(
        model=model, messages=[gateway_pb2.ChatMessage(role="user", content=text)], **fields  # type: ignore[arg-type]
    )


async def test_chat_streams_deltas_then_a_final_chunk_with_the_route(stub, stack: Stack) -> None:
    chunks = [c async for c in stub.Chat(chat("router-mf-50", max_tokens=9), timeout=20)]
    assert "".join(c.delta for c in chunks) == "Hello, world!"
    last = chunks[-1]
    assert last.finish_reason == "stop" and all(not c.finish_reason for c in chunks[:-1])
    assert last.usage.completion_tokens == 4 and last.usage.total_tokens == last.usage.prompt_tokens + 4
    assert last.route.model in (STRONG, WEAK) and last.route.routed and not last.route.degraded
    assert last.route.threshold > 0 and "score" in last.route.reason
    assert {c.model for c in chunks} == {last.route.model}
    assert stack.ollama.requests[-1]["body"]["options"] == {"num_predict": 9}


async def test_cut_stream_ends_with_an_error_status_after_the_deltas(stub, stack: Stack) -> None:
    stack.ollama.cut_after = 2
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for chunk in stub.Chat(chat(WEAK), timeout=20):
            received.append(chunk)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "upstream 'ollama'" in (info.value.details() or "")
    assert "".join(c.delta for c in received) == "Hello,"
    assert not any(c.finish_reason for c in received)  # never a fake final chunk


@pytest.mark.parametrize(
    ("request_", "code", "message"),
    [
        (gateway_pb2.ChatRequest(model="router"), grpc.StatusCode.INVALID_ARGUMENT, "messages is empty"),
        (chat("nope"), grpc.StatusCode.NOT_FOUND, "'nope' is not served here"),
        (chat("router-mf-2"), grpc.StatusCode.INVALID_ARGUMENT, "within [0, 1]"),
    ],
)
async def test_bad_requests(stub, request_, code, message) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in stub.Chat(request_, timeout=10):
            pass
    assert info.value.code() == code and message in (info.value.details() or "")


async def test_undecodable_bytes_are_invalid_argument(stack: Stack) -> None:
    async with grpc.aio.insecure_channel(stack.grpc_address) as channel:
        raw = channel.unary_stream(
            "/gateway.v1.GatewayService/Chat", request_serializer=lambda b: b, response_deserializer=lambda b: b
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in raw(b"\x12\x02\xff\xfe", timeout=5):
                pass
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_list_models_and_health(stub, stack: Stack) -> None:
    listed = await stub.ListModels(gateway_pb2.ListModelsRequest(), timeout=5)
    owners = {m.id: m.owned_by for m in listed.models}
    assert owners["router-mf-50"] == "router" and owners[STRONG] == "ollama" and owners["gpt-4o-mini"] == "openai"
    async with grpc.aio.insecure_channel(stack.grpc_address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="gateway.v1.GatewayService"), timeout=5
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_cancelled_call_closes_the_upstream_request(stub, stack: Stack) -> None:
    import asyncio

    stack.ollama.reply = tuple(f"token{i} " for i in range(200))
    stack.ollama.chunk_delay_s = 0.02
    call = stub.Chat(chat(WEAK), timeout=20)
    async for chunk in call:
        if "token3" in chunk.delta:
            call.cancel()
            break
    for _ in range(100):
        if stack.ollama.closed_early:
            break
        await asyncio.sleep(0.02)
    assert stack.ollama.closed_early == 1 and stack.ollama.open_streams == 0


async def test_usage_the_upstream_did_not_report_is_unset_not_zero(stub, stack: Stack) -> None:
    stack.openai.no_usage = True  # as llama.cpp's server streams
    chunks = [c async for c in stub.Chat(chat("gpt-4o-mini"), timeout=20)]
    assert "".join(c.delta for c in chunks) == "Hello, world!" and chunks[-1].finish_reason == "stop"
    assert not chunks[-1].HasField("usage")


def struct(value: Any) -> Struct:
    out = Struct()
    out.update(value)
    return out


WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string", "maxLength": 64}}, "required": ["city"]}}}
PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


async def test_tools_stream_back_as_openai_fragments_and_fields_reach_the_upstream(stub, stack: Stack) -> None:
    """The gRPC Chat carries what the HTTP API carries: tools, tool_choice, response_format, any other field."""
    stack.openai.tool_call = ("get_weather", '{"city": "Paris"}')
    request = chat(
        "gpt-4o-mini", "Weather in Paris?", tools=[struct(WEATHER)], tool_choice=Value(string_value="auto"),
        extra=struct({"parallel_tool_calls": False, "logprobs": False}),
    )
    chunks = [c async for c in stub.Chat(request, timeout=20)]
    fragments = [json_format.MessageToDict(call) for c in chunks for call in c.tool_calls]
    assert fragments[0]["function"]["name"] == "get_weather" and fragments[0]["id"].startswith("call_")
    assert "".join(f["function"].get("arguments", "") for f in fragments) == '{"city": "Paris"}'
    assert chunks[-1].finish_reason == "tool_calls"
    sent = stack.openai.requests[-1]["body"]
    assert sent["tools"] == [WEATHER]  # whole numbers stay whole (maxLength 64, not 64.0)
    assert sent["tool_choice"] == "auto" and sent["parallel_tool_calls"] is False and sent["logprobs"] is False


async def test_tool_turns_images_and_structured_output_pass_through(stub, stack: Stack) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    image = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}}
    request = gateway_pb2.ChatRequest(model="gpt-4o-mini", messages=[
        gateway_pb2.ChatMessage(role="user", parts=[struct({"type": "text", "text": "What is this?"}), struct(image)]),
        gateway_pb2.ChatMessage(role="assistant", tool_calls=[struct(call)]),
        gateway_pb2.ChatMessage(role="tool", content="18 C", tool_call_id="call_1", name="get_weather"),
    ], response_format=struct({"type": "json_object"}))
    assert "".join([c.delta async for c in stub.Chat(request, timeout=20)]) == "Hello, world!"
    sent = stack.openai.requests[-1]["body"]
    assert sent["messages"][0]["content"][1] == image and sent["messages"][1]["tool_calls"] == [call]
    assert sent["messages"][2] == {"role": "tool", "content": "18 C", "tool_call_id": "call_1", "name": "get_weather"}
    assert sent["response_format"] == {"type": "json_object"}
    # To Ollama the same request is translated: the image as images, the schema as format.
    request.model = WEAK
    del request.messages[1:]
    request.response_format.Clear()
    request.response_format.update({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}})
    assert "".join([c.delta async for c in stub.Chat(request, timeout=20)]) == "Hello, world!"
    to_ollama = stack.ollama.requests[-1]["body"]
    assert to_ollama["messages"][0] == {"role": "user", "content": "What is this?", "images": [PIXEL]}
    assert to_ollama["format"] == {"type": "object"}


async def test_reasoning_streams_in_its_own_field(stub, stack: Stack) -> None:
    stack.ollama.thinking = ("Let me think. ",)
    chunks = [c async for c in stub.Chat(chat(WEAK), timeout=20)]
    assert "".join(c.reasoning for c in chunks) == "Let me think. " and "".join(c.delta for c in chunks) == "Hello, world!"
