"""Careless and hostile clients, and a careless upstream: each defect here once got through (issue #15)."""

from __future__ import annotations

import asyncio
import json
import logging

import grpc
import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway_service.server import build_gateway
from routing_api.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from tests.conftest import closed_port
from tests.gateway.conftest import STRONG, WEAK, Stack, gateway_settings
from tests.http_servers import serve_app

SAY_HI = [{"role": "user", "content": "hi"}]


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "gateway_service.access"]


async def test_a_chunked_body_is_refused_while_it_is_still_arriving(stack: Stack) -> None:
    """No Content-Length: the limit applies to what has been read, not after reading it all."""
    limit = stack.gateway.settings.limits.max_body_bytes
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.gateway.http_port)
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n")
    piece = b"x" * 65536
    for _ in range(limit // len(piece) + 2):  # past the limit, and the body never ends
        writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        await writer.drain()
    status = await asyncio.wait_for(reader.readline(), timeout=10)
    writer.close()
    assert status.startswith(b"HTTP/1.1 413")


@pytest.mark.parametrize("given", ["tab\there", "caf\u00e9", "x" * 20_000])
async def test_a_bad_request_id_is_replaced_not_forwarded(stack: Stack, given: str) -> None:
    async with httpx.AsyncClient(timeout=20) as http:
        response = await http.post(
            f"{stack.base_url}/chat/completions", json={"model": "router", "messages": SAY_HI},
            headers={b"x-request-id": given.encode("utf-8")},  # raw bytes: what a careless client sends
        )
    assert response.status_code == 200, response.text
    assert response.headers["x-route-degraded"] == "false"  # the router call did not fail on the id
    assert response.headers["x-request-id"] != given and len(response.headers["x-request-id"]) == 32
    assert "printable ASCII" in response.headers["x-request-id-note"]


async def test_upstream_text_is_redacted_before_clients_and_logs_see_it(
    stack: Stack, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "sk-live-4f9a8b7c6d5e4f3a2b1c"
    monkeypatch.setenv("TEST_UPSTREAM_KEY", key)
    gateway = await build_gateway(stack.gateway.settings.model_copy(update={"fallback_model": None}))
    caplog.set_level(logging.INFO)
    stack.openai.echo_key_status = 401
    try:
        async with httpx.AsyncClient(timeout=20) as http:
            response = await http.post(
                f"http://127.0.0.1:{gateway.http_port}/v1/chat/completions",
                json={"model": "gpt-4o-mini", "messages": SAY_HI},
            )
    finally:
        await gateway.stop()
    assert response.status_code == 502 and "Incorrect API key provided" in response.text
    assert stack.openai.requests[-1]["headers"]["authorization"] == f"Bearer {key}"  # it really got the key
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for text in (response.text, logged):
        assert key not in text and "Bearer [redacted]" in text


async def test_every_request_leaves_one_access_line(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway_service.access")
    url = f"{stack.base_url}/chat/completions"
    stack.ollama.fail_status = 500  # the strong model and its fallback, the weak one (same upstream), both fail
    async with httpx.AsyncClient(timeout=20) as http:
        answers = {
            "bad json": await http.post(url, content=b"{", headers={"x-request-id": "r-400"}),
            "unknown model": await http.post(url, json={"model": "nope", "messages": SAY_HI}, headers={"x-request-id": "r-404"}),
            "both attempts fail": await http.post(url, json={"model": STRONG, "messages": SAY_HI}, headers={"x-request-id": "r-502"}),
        }
    assert [a.status_code for a in answers.values()] == [400, 404, 502]
    lines = {line["request_id"]: line for line in access_lines(caplog)}
    assert {k: lines[k]["status"] for k in ("r-400", "r-404", "r-502")} == {"r-400": 400, "r-404": 404, "r-502": 502}
    # The 502 names both attempts: the strong model, then the fallback that failed too.
    message = answers["both attempts fail"].json()["error"]["message"]
    assert message.startswith(f"model {STRONG!r} failed: ") and f"Its fallback {WEAK!r} failed the same way" in message
    failed = answers["both attempts fail"].headers  # the error answer still says how the model was chosen
    assert failed["x-route-model"] == WEAK and failed["x-route-fallback"] == "true"


async def test_a_client_that_leaves_mid_body_costs_one_line(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    for _ in range(3):
        _, writer = await asyncio.open_connection("127.0.0.1", stack.gateway.http_port)
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n{\"model\"")
        await writer.drain()
        writer.close()
        await writer.wait_closed()
    for _ in range(100):
        if sum("went away while sending its body" in r.getMessage() for r in caplog.records) >= 3:
            break
        await asyncio.sleep(0.02)
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    assert sum("went away while sending its body" in r.getMessage() for r in caplog.records) == 3


async def test_one_prompt_limit_for_routed_and_concrete_models(stack: Stack) -> None:
    """A 150k-character tool result or paste is taken, routed (on a bounded part of it) or not; past the limit
    both get the same refusal."""
    taken = [{"role": "user", "content": "y" * 150_000}]
    long = [{"role": "user", "content": "y" * 1_000_001}]
    async with httpx.AsyncClient(timeout=20) as http:
        for model in ("router", WEAK):
            answer = await http.post(f"{stack.base_url}/chat/completions", json={"model": model, "messages": taken})
            assert answer.status_code == 200, answer.text[:300]
        routed = await http.post(f"{stack.base_url}/chat/completions", json={"model": "router", "messages": long})
        concrete = await http.post(f"{stack.base_url}/chat/completions", json={"model": WEAK, "messages": long})
    assert routed.status_code == concrete.status_code == 413
    assert routed.json()["error"]["message"] == concrete.json()["error"]["message"]
    assert "limits.max_prompt_chars=1000000" in routed.json()["error"]["message"]


async def test_a_full_upstream_refuses_in_bounded_time(stack: Stack) -> None:
    """Past max_concurrency a request waits queue_timeout_s at most, then falls back or gets 429."""
    settings = stack.gateway.settings
    upstreams = [u.model_copy(update={"max_concurrency": 1, "queue_timeout_s": 0.3}) for u in settings.upstreams]
    gateway = await build_gateway(settings.model_copy(update={"upstreams": tuple(upstreams), "fallback_model": None}))
    stack.ollama.chunk_delay_s = 0.5  # the first stream holds the only slot for ~2 s
    url = f"http://127.0.0.1:{gateway.http_port}/v1/chat/completions"
    try:
        async with httpx.AsyncClient(timeout=20) as http:
            first = asyncio.create_task(http.post(url, json={"model": WEAK, "messages": SAY_HI, "stream": True}))
            await asyncio.sleep(0.2)
            second = await asyncio.wait_for(http.post(url, json={"model": WEAK, "messages": SAY_HI}), timeout=1.5)
            await first
    finally:
        await gateway.stop()
    assert second.status_code == 429 and second.headers["retry-after"] == "1"
    assert "queue_timeout_s" in second.json()["error"]["message"]


async def test_an_unexpected_error_is_a_500_with_an_id_never_a_traceback(
    stack: Stack, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug with secret internals")

    monkeypatch.setattr(stack.gateway.chat, "open", broken)
    caplog.set_level(logging.INFO)
    async with httpx.AsyncClient(timeout=20) as http:
        response = await http.post(f"{stack.base_url}/chat/completions", json={"model": WEAK, "messages": SAY_HI})
    async with grpc.aio.insecure_channel(stack.grpc_address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            async for _ in gateway_pb2_grpc.GatewayServiceStub(channel).Chat(
                gateway_pb2.ChatRequest(model=WEAK, messages=[gateway_pb2.ChatMessage(role="user", content="hi")])
            ):
                pass
    assert response.status_code == 500 and response.headers["content-type"] == "application/json"
    error_id = response.json()["error"]["message"].split("(id ")[1].split(")")[0]
    assert "secret internals" not in response.text and any(error_id in r.getMessage() for r in caplog.records)
    assert failed.value.code() == grpc.StatusCode.INTERNAL and "internal error (id " in (failed.value.details() or "")
    assert "secret internals" not in (failed.value.details() or "")


async def test_a_share_written_as_a_threshold_is_explained(stack: Stack) -> None:
    async with httpx.AsyncClient(timeout=20) as http:
        response = await http.post(f"{stack.base_url}/chat/completions", json={"model": "router-mf-30", "messages": SAY_HI})
    message = response.json()["error"]["message"]
    assert response.status_code == 400 and "router-mf-0.11593" in message
    assert "router-mf-20, router-mf-50, router-mf-80" in message and "[[policies]]" in message


async def test_a_routed_model_no_upstream_serves_is_named_at_start(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    settings = stack.gateway.settings
    only_strong = [u.model_copy(update={"models": (STRONG,)}) if u.name == "ollama" else u for u in settings.upstreams]
    caplog.set_level(logging.WARNING, logger="gateway_service.routing.router_client")
    gateway = await build_gateway(settings.model_copy(update={"upstreams": tuple(only_strong), "fallback_model": None}))
    try:
        for _ in range(100):
            if caplog.records:
                break
            await asyncio.sleep(0.02)
    finally:
        await gateway.stop()
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "gateway_service.routing.router_client"]
    assert f"may choose ['{WEAK}'], which no upstream serves" in warning and "routing.strong_model" in warning


async def test_slow_clients_are_timed_out(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    """Partial headers or a partial body no longer hold a connection forever (slowloris)."""
    server = stack.gateway.settings.server.model_copy(update={"header_timeout_s": 0.5, "body_timeout_s": 0.5})
    gateway = await build_gateway(stack.gateway.settings.model_copy(update={"server": server}))
    caplog.set_level(logging.INFO)
    partial = [
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Ty",  # headers never finish
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{\"model\": \"router\"",  # nor the body
        b"",  # connects, sends nothing
    ]
    try:
        connections = [await asyncio.open_connection("127.0.0.1", gateway.http_port) for _ in range(3 * len(partial))]
        for (_, writer), data in zip(connections, partial * 3, strict=True):
            writer.write(data)
        answers = await asyncio.wait_for(asyncio.gather(*(reader.read() for reader, _ in connections)), timeout=5)
    finally:
        for _, writer in connections:
            writer.close()
        await gateway.stop()
    assert all(answer.startswith(b"HTTP/1.1 408") for answer in answers), answers  # then the server closed it
    assert b"server.header_timeout_s" in answers[0] and b"server.body_timeout_s" in answers[1]
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


async def test_a_spent_strong_budget_answers_weak_and_says_so(stack: Stack) -> None:
    from router_service.server import build_router
    from tests.conftest import router_settings
    from tests.gateway.conftest import gateway_settings

    router = await build_router(router_settings(routing={"strong_budget": 1, "budget_window_s": 3600}))
    gateway = await build_gateway(gateway_settings(router.port, *stack.upstream_roots))
    body = {"model": "router-mf-0.0", "messages": [{"role": "user", "content": "Prove Fermat's little theorem."}]}
    try:
        async with httpx.AsyncClient(timeout=20) as http:
            first, second = [await http.post(f"http://127.0.0.1:{gateway.http_port}/v1/chat/completions", json=body) for _ in range(2)]
    finally:
        await gateway.stop()
        await router.stop()
    assert first.status_code == second.status_code == 200  # never an error
    assert first.headers["x-route-model"] == STRONG and first.headers["x-route-budget-limited"] == "false"
    assert second.headers["x-route-model"] == WEAK and second.headers["x-route-budget-limited"] == "true"


async def test_streams_cut_by_the_end_of_the_grace_end_with_an_error_event_and_one_line_each(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue #28.5: they were torn (an incomplete chunked body, no error event) with a traceback each."""
    server = stack.gateway.settings.server.model_copy(update={"grace_s": 0.3})
    gateway = await build_gateway(stack.gateway.settings.model_copy(update={"server": server}))
    stack.ollama.stall_after, stack.ollama.stall_s = 1, 5.0  # the first token, then silence far past the grace
    caplog.set_level(logging.INFO)
    base = f"http://127.0.0.1:{gateway.http_port}"
    request = gateway_pb2.ChatRequest(model=WEAK, messages=[gateway_pb2.ChatMessage(role="user", content="hi")])
    async with httpx.AsyncClient(timeout=20) as http, grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:

        async def read(path: str, body: dict[str, object]) -> list[str]:
            async with http.stream("POST", base + path, json=body) as response:
                return [line async for line in response.aiter_lines() if line]  # a torn body raises here

        async def chat() -> grpc.StatusCode:
            try:
                async for _ in gateway_pb2_grpc.GatewayServiceStub(channel).Chat(request):
                    pass
            except grpc.aio.AioRpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK

        sse = [asyncio.create_task(read("/v1/chat/completions", {"model": WEAK, "messages": SAY_HI, "stream": True}))
               for _ in range(2)]
        ndjson = asyncio.create_task(read("/api/chat", {"model": WEAK, "messages": SAY_HI}))
        called = asyncio.create_task(chat())
        await asyncio.sleep(0.5)  # all streaming
        await gateway.stop()
        answers = await asyncio.gather(*sse, ndjson)
        status = await called
    for lines in answers[:2]:  # a token, then the error event, in a whole chunked body
        assert json.loads(lines[0].removeprefix("data: "))["choices"][0]["delta"]["role"] == "assistant"
        last = json.loads(lines[-1].removeprefix("data: "))
        assert last["error"]["code"] == "shutting_down" and "grace" in last["error"]["message"], lines
    assert json.loads(answers[2][0])["message"]["content"] == "Hello"
    assert "shutting down" in json.loads(answers[2][-1])["error"]
    assert status == grpc.StatusCode.UNAVAILABLE
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records if r.exc_info]
    outcomes = [line["outcome"] for line in access_lines(caplog)]
    assert outcomes == ["error:ShuttingDown"] * 4, outcomes


async def test_a_grpc_call_broken_mid_stream_leaves_exactly_one_access_line(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway_service.access")
    stack.ollama.cut_after = 2
    request = gateway_pb2.ChatRequest(model=WEAK, messages=[gateway_pb2.ChatMessage(role="user", content="hi")])
    async with grpc.aio.insecure_channel(stack.grpc_address) as channel:
        with pytest.raises(grpc.aio.AioRpcError):
            async for _ in gateway_pb2_grpc.GatewayServiceStub(channel).Chat(request, metadata=(("x-request-id", "g-cut"),)):
                pass
    lines = [line for line in access_lines(caplog) if line["request_id"] == "g-cut"]
    assert len(lines) == 1 and lines[0]["outcome"] == "error:UpstreamStreamError", lines


async def test_an_upstream_that_answers_json_to_a_stream_request_is_named(stack: Stack) -> None:
    """Some OpenAI-compatible servers ignore ``stream: true``: a clear 502, not a parse error or a hang."""
    async def whole(request: object) -> JSONResponse:
        return JSONResponse({"object": "chat.completion", "choices": [{"message": {"content": "hi"}}]})

    app = Starlette(routes=[Route("/v1/chat/completions", whole, methods=["POST"])])
    ollama_url, _ = stack.upstream_roots
    async with serve_app(app) as json_only:
        settings = gateway_settings(closed_port(), ollama_url, json_only, fallback_model=None)
        gateway = await build_gateway(settings)
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                answer = await http.post(
                    f"http://127.0.0.1:{gateway.http_port}/v1/chat/completions",
                    json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": True},
                )
        finally:
            await gateway.stop()
    assert answer.status_code == 502, answer.text
    message = answer.json()["error"]["message"]
    assert json_only in message and "application/json" in message and "not server-sent events" in message
