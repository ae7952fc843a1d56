"""Contracts with dependencies' private internals: each one the gateway relies on, named and checked.

pyproject pins each of these packages below its next minor version; when a bump is tried, this
file says at once whether what the gateway reaches into is still there and still means the same.
"""

from __future__ import annotations

import asyncio
import inspect

import aiohttp
import pytest


def test_uvicorn_httptools_protocol_has_the_hooks_the_read_deadlines_override() -> None:
    """gateway_service/http_protocol.py: a subclass with read deadlines (slowloris)."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    for hook in ("connection_made", "on_message_begin", "on_headers_complete", "on_message_complete", "connection_lost"):
        assert callable(getattr(HttpToolsProtocol, hook)), hook
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

    source = inspect.getsource(HttpToolsProtocol)
    for attribute in ("self.transport", "self.cycle", "self.loop", "self.client"):
        assert attribute in source, attribute
    assert "self.response_started" in inspect.getsource(RequestResponseCycle)


def test_httpx_sse_decoders_keep_their_module_and_interface() -> None:
    """gateway_service/upstreams/openai.py feeds aiohttp's bytes to httpx-sse's spec decoders."""
    from httpx_sse._decoders import SSEDecoder, SSELineDecoder

    lines, fields = SSELineDecoder(), SSEDecoder()
    decoded = [fields.decode(line) for line in lines.decode("data: {\"a\": 1}\r\n\r\ndata: [DONE]\n\n")]
    events = [e for e in decoded if e is not None]
    assert [e.data for e in events] == ['{"a": 1}', "[DONE]"] and lines.flush() == []


async def test_aiohttp_stream_reader_keeps_bytes_in_its_buffer_after_a_break() -> None:
    """gateway_service/upstreams/http.py reads ``_buffer`` and ``_buffer_offset`` after a broken connection, so
    tokens that arrived before the break are not lost."""
    from aiohttp.base_protocol import BaseProtocol

    from gateway_service.upstreams.http import _arrived

    protocol = BaseProtocol(asyncio.get_running_loop())
    reader = aiohttp.StreamReader(protocol, 2**16, loop=asyncio.get_running_loop())
    reader.feed_data(b"line one\nline two\n")
    assert await reader.readline() == b"line one\n"
    reader.set_exception(aiohttp.ClientPayloadError("cut"))
    with pytest.raises(aiohttp.ClientPayloadError):
        await reader.readline()
    assert isinstance(reader._buffer, object) and isinstance(reader._buffer_offset, int)
    assert _arrived(reader) == b"line two\n"
