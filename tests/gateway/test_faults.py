"""Upstream faults, one at a time: what the client sees, that nothing hangs or leaks, and the metrics.

Before the first token a fault must end in the fallback model's answer; after it,
in a terminal error (an SSE error event, no [DONE]). Every case ends with no
stream open at the upstream, no gateway task left behind and nothing in flight.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
import pytest

from gateway_service.server import GatewayApp, build_gateway
from gateway_service.upstreams.http import body_chunks, body_lines
from tests.conftest import closed_port
from tests.gateway.conftest import STRONG, Stack, gateway_settings

READ_TIMEOUT = 0.5


@pytest.fixture
async def faulty(stack: Stack) -> AsyncIterator[GatewayApp]:
    """The ollama upstream fails; the openai one (gpt-4o-mini) is the healthy fallback."""
    ollama_url, openai_url = stack.upstream_roots
    router_port = int(stack.gateway.settings.router.address.rsplit(":", 1)[1])
    settings = gateway_settings(router_port, ollama_url, openai_url, fallback_model="gpt-4o-mini")
    upstreams = [u.model_copy(update={"read_timeout_s": READ_TIMEOUT, "connect_timeout_s": READ_TIMEOUT}) for u in settings.upstreams]
    gateway = await build_gateway(settings.model_copy(update={"upstreams": tuple(upstreams)}))
    try:
        yield gateway
    finally:
        await gateway.stop()


async def stream(gateway: GatewayApp) -> tuple[int, dict[str, str], list[str]]:
    url = f"http://127.0.0.1:{gateway.http_port}/v1/chat/completions"
    body = {"model": STRONG, "messages": [{"role": "user", "content": "hello"}], "stream": True}
    async with httpx.AsyncClient(timeout=10) as http, http.stream("POST", url, json=body) as response:
        lines = [line async for line in response.aiter_lines() if line]
        return response.status_code, dict(response.headers), lines


def text_of(lines: list[str]) -> str:
    import json

    out = ""
    for line in lines:
        if line.startswith("data: {") and '"choices"' in line:
            for choice in json.loads(line[6:])["choices"]:
                out += choice["delta"].get("content") or ""
    return out


BEFORE_FIRST_TOKEN: dict[str, tuple[dict[str, Any], str]] = {
    "refused connection": ({}, "UpstreamUnreachable"),
    "HTTP 500": ({"fail_status": 500}, "UpstreamError"),
    "429 with Retry-After": ({"fail_status": 429, "retry_after": "3"}, "UpstreamBusy"),
    "stall before the first byte": ({"stall_s": 1.0}, "UpstreamTimeout"),
    "malformed first chunk": ({"malformed_after": 0}, "UpstreamStreamError"),
}
AFTER_FIRST_TOKEN: dict[str, tuple[dict[str, Any], str]] = {
    "stall mid-stream": ({"stall_after": 2, "stall_s": 1.0}, "UpstreamTimeout"),
    "cut after 2 chunks": ({"cut_after": 2}, "UpstreamStreamError"),
    "malformed chunk mid-stream": ({"malformed_after": 2}, "UpstreamStreamError"),
}


async def settle(stack: Stack, gateway: GatewayApp, tasks_before: int) -> None:
    """Wait for the dust (a stalled test upstream finishes its sleep), then count."""
    for _ in range(150):
        if stack.ollama.open_streams == 0 and len(asyncio.all_tasks()) <= tasks_before:
            break
        await asyncio.sleep(0.02)
    assert stack.ollama.open_streams == 0, "a stream stayed open at the upstream"
    assert len(asyncio.all_tasks()) <= tasks_before, "the gateway left tasks behind"
    assert gateway.chat.metrics.inflight._value.get() == 0


async def metric(gateway: GatewayApp) -> str:
    async with httpx.AsyncClient() as http:
        return (await http.get(f"http://127.0.0.1:{gateway.http_port}/metrics")).text


@pytest.mark.parametrize("fault", list(BEFORE_FIRST_TOKEN))
async def test_faults_before_the_first_token_fall_back(stack: Stack, faulty: GatewayApp, fault: str) -> None:
    knobs, kind = BEFORE_FIRST_TOKEN[fault]
    if fault == "refused connection":
        upstream = faulty.chat.dispatch.by_model[STRONG]
        upstream.pool.hosts[0].target = f"http://127.0.0.1:{closed_port()}"  # type: ignore[attr-defined]
    for key, value in knobs.items():
        setattr(stack.ollama, key, value)
    tasks_before = len(asyncio.all_tasks())
    started = time.monotonic()
    status, headers, lines = await stream(faulty)
    assert time.monotonic() - started < READ_TIMEOUT + 2  # nothing waits past its timeout
    assert status == 200 and headers["x-route-fallback"] == "true" and headers["x-route-model"] == "gpt-4o-mini"
    assert text_of(lines) == "Hello, world!" and lines[-1] == "data: [DONE]"
    await settle(stack, faulty, tasks_before)
    assert f'gateway_upstream_errors_total{{kind="{kind}",upstream="ollama"}} 1.0' in await metric(faulty)


@pytest.mark.parametrize("fault", list(AFTER_FIRST_TOKEN))
async def test_faults_after_the_first_token_end_in_a_terminal_error(stack: Stack, faulty: GatewayApp, fault: str) -> None:
    knobs, kind = AFTER_FIRST_TOKEN[fault]
    for key, value in knobs.items():
        setattr(stack.ollama, key, value)
    tasks_before = len(asyncio.all_tasks())
    started = time.monotonic()
    status, headers, lines = await stream(faulty)
    assert time.monotonic() - started < READ_TIMEOUT + 2
    assert status == 200 and headers["x-route-model"] == STRONG
    assert text_of(lines) == "Hello,"  # what came before the fault, and nothing invented
    assert lines[-1].startswith('data: {"error"') and "data: [DONE]" not in lines
    await settle(stack, faulty, tasks_before)
    assert f'gateway_upstream_errors_total{{kind="{kind}",upstream="ollama"}} 1.0' in await metric(faulty)


@pytest.mark.parametrize(("fault", "knobs"), [("huge chunk", {"huge_chunk_bytes": 1_000_000}),
                                              ("very slow", {"chunk_delay_s": 0.3})])
async def test_big_or_slow_streams_complete(stack: Stack, faulty: GatewayApp, fault: str, knobs: dict) -> None:
    for key, value in knobs.items():
        setattr(stack.ollama, key, value)
    tasks_before = len(asyncio.all_tasks())
    status, _, lines = await stream(faulty)
    expected = "Hello, world!" + "z" * knobs.get("huge_chunk_bytes", 0)
    assert status == 200 and text_of(lines) == expected and lines[-1] == "data: [DONE]"
    await settle(stack, faulty, tasks_before)


async def _cut_server(body: bytes, content_type: str) -> tuple[asyncio.Server, str]:
    """Answers one request with ``body`` as HTTP/1.1 chunks, one a line, then closes without the last chunk."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        head = f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(line), line) for line in body.splitlines(keepends=True))
        writer.write(head + chunks)
        await writer.drain()
        writer.close()  # no 0-chunk: the body is incomplete

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"


@pytest.mark.parametrize("reader", ["lines", "chunks"])
async def test_what_arrived_before_the_connection_broke_is_read_before_the_error(reader: str) -> None:
    """aiohttp raises a broken connection before handing out what it had already buffered; the gateway reads
    those bytes first, so the last tokens an upstream sent before it failed still reach the client."""
    body = b'{"message":{"content":"Hello"},"done":false}\n{"message":{"content":","},"done":false}\n{"mess'
    server, url = await _cut_server(body, "application/x-ndjson")
    async with server, aiohttp.ClientSession() as session, session.get(url) as response:
        await asyncio.sleep(0.2)  # the whole answer and the close arrive before the first read
        got: list[bytes] = []
        with pytest.raises(aiohttp.ClientPayloadError):
            async for data in (body_lines if reader == "lines" else body_chunks)(response.content):
                got.append(data)
    if reader == "lines":  # whole lines only: the cut one is not data
        assert got == body.splitlines(keepends=True)[:2]
    else:
        assert b"".join(got) == body


async def test_a_line_over_the_chunk_bound_ends_in_an_error_that_names_the_bound(stack: Stack, faulty: GatewayApp) -> None:
    stack.ollama.huge_chunk_bytes = 1_500_000  # one NDJSON line over the 1 MiB a chunk may be
    status, _, lines = await stream(faulty)
    assert status == 200 and text_of(lines) == "Hello, world!"  # what came before it, then the error
    assert lines[-1].startswith('data: {"error"') and "data: [DONE]" not in lines
    assert "sent a line longer than 1 MiB" in lines[-1] and "upstream 'ollama'" in lines[-1]
