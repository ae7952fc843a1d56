"""Open WebUI 0.12.4's own requests, recorded at a proxy (../shared/clients), replayed against the gateway.

Each is answered as the client expects: 2xx, a whole JSON answer or a stream in the API's own
format to its end (NDJSON to ``done: true``, SSE to ``[DONE]``). The upstream is the test server,
which answers a request that carries tools with a tool call, as a model would.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.gateway.conftest import Stack

RECORDED = Path(__file__).resolve().parents[2].parent / "shared" / "clients" / "open-webui-0.12.4" / "requests.jsonl"
REQUESTS = [json.loads(line) for line in RECORDED.read_text().splitlines()] if RECORDED.exists() else []


def _name(request: dict[str, Any]) -> str:
    body = request["body"] or {}
    roles = "-".join(m["role"] for m in body.get("messages", ()))
    return f"{request['method']} {request['path']} {roles}{' stream' if body.get('stream', request['path'] == '/api/chat') else ''}"


@pytest.mark.skipif(not REQUESTS, reason="../shared/clients is not beside this checkout")
@pytest.mark.parametrize("request_", REQUESTS, ids=[f"{i:02d} {_name(r)}" for i, r in enumerate(REQUESTS)])
async def test_each_recorded_request_is_answered_as_open_webui_expects(stack: Stack, request_: dict[str, Any]) -> None:
    stack.ollama.tool_call = stack.openai.tool_call = ("get_current_timestamp", "{}")
    url = f"http://127.0.0.1:{stack.gateway.http_port}{request_['path']}"
    body = request_["body"]
    async with httpx.AsyncClient(timeout=30) as http:
        answer = await http.request(request_["method"], url, json=body)
    assert 200 <= answer.status_code < 300, answer.text[:500]
    if body is None:
        assert answer.json() is not None
        return
    streamed = body.get("stream", request_["path"] == "/api/chat")  # Ollama streams unless told not to
    if request_["path"] == "/api/chat":
        lines = [json.loads(line) for line in answer.text.splitlines() if line]
        assert lines[-1]["done"] is True and "error" not in lines[-1], lines[-1]
        assert len(lines) > 1 if streamed else len(lines) == 1
        said = "".join(line["message"].get("content", "") for line in lines)
        called = [c for line in lines for c in line["message"].get("tool_calls", ())]
    else:
        if streamed:
            events = [line[6:] for line in answer.text.splitlines() if line.startswith("data: ")]
            assert events[-1] == "[DONE]", events[-3:]
            deltas = [json.loads(e)["choices"][0]["delta"] for e in events[:-1] if json.loads(e)["choices"]]
            said = "".join(d.get("content") or "" for d in deltas)
            called = [c for d in deltas for c in d.get("tool_calls", ())]
        else:
            message = answer.json()["choices"][0]["message"]
            said, called = message["content"] or "", message.get("tool_calls", [])
    assert said or called  # an answer, or the tool call a request with tools asks for
