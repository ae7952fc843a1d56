"""Claude Code 2.1.328's and Codex 0.169.0's own requests, recorded at a proxy (../shared/clients), replayed
against the gateway with their headers, on an Ollama-format and an OpenAI-format upstream.

Each must be answered as the agent expects, to its end: Anthropic's events to ``message_stop``, Responses
events to ``response.completed``; the tool-loop continuations (a ``tool_result`` block, a
``function_call_output`` item) included. The test upstream calls the agent's shell tool until the
conversation holds a tool result, then answers text, as the recording's server did.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.gateway.conftest import Stack

CLIENTS = Path(__file__).resolve().parents[2].parent / "shared" / "clients"
DROPPED_HEADERS = {"host", "content-length", "accept-encoding", "connection"}


def _recorded(folder: str) -> list[dict[str, Any]]:
    path = CLIENTS / folder / "requests.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


REQUESTS = [("claude-code", r) for r in _recorded("claude-code-2.1.328")] + [("codex", r) for r in _recorded("codex-0.169.0")]


def _name(agent: str, request: dict[str, Any]) -> str:
    body = request["body"]
    items = body.get("messages") or body.get("input") or []
    last = items[-1] if items else {}
    kind = last.get("type") or (last.get("content") or [{}])[-1].get("type", "text") if isinstance(last, dict) else "?"
    return f"{agent} {len(items)} items, last {kind}"


@pytest.mark.skipif(not REQUESTS, reason="../shared/clients is not beside this checkout")
@pytest.mark.parametrize("upstream", ["ollama", "openai"])
@pytest.mark.parametrize(("agent", "request_"), REQUESTS, ids=[f"{i} {_name(a, r)}" for i, (a, r) in enumerate(REQUESTS)])
async def test_each_recorded_agent_request_is_answered_to_its_end(
    stack: Stack, caplog: pytest.LogCaptureFixture, upstream: str, agent: str, request_: dict[str, Any]
) -> None:
    caplog.set_level(logging.INFO, logger="gateway_service.access")
    tool = ("Bash", '{"command": "ls"}') if agent == "claude-code" else ("exec_command", '{"cmd": "ls"}')
    for state in (stack.ollama, stack.openai):
        state.tool_call, state.tool_once = tool, True
    body = dict(request_["body"])
    if upstream == "openai":
        body["model"] = "gpt-4o-mini"
    headers = {k: v for k, v in request_.get("headers", {}).items() if k not in DROPPED_HEADERS}
    url = f"http://127.0.0.1:{stack.gateway.http_port}{request_['path']}"
    async with httpx.AsyncClient(timeout=30) as http:
        answer = await http.post(url, json=body, headers=headers)
    assert answer.status_code == 200, answer.text[:500]
    events = [json.loads(line[6:]) for line in answer.text.splitlines() if line.startswith("data: ")]
    kinds = [e["type"] for e in events]
    if agent == "claude-code":
        assert kinds[0] == "message_start" and kinds[-1] == "message_stop" and "error" not in kinds, kinds
        reason = next(e["delta"]["stop_reason"] for e in events if e["type"] == "message_delta")
        assert reason == ("tool_use" if request_["body"]["tools"] and not _answered(request_["body"]) else "end_turn"), reason
    else:
        assert kinds[0] == "response.created" and kinds[-1] == "response.completed", kinds
        outputs = [item["type"] for item in events[-1]["response"]["output"]]
        answered = request_["body"]["input"][-1]["type"] == "function_call_output"
        assert outputs == (["message"] if answered else ["function_call"]), outputs
    served = stack.ollama if upstream == "ollama" else stack.openai
    sent = served.requests[-1]["body"]
    assert sent["model"] in ("llama3.1:8b", "llama3.2:1b", "gpt-4o-mini")
    # Claude Code's adaptive thinking and Codex's reasoning summary switch nothing on: Ollama refuses think for a
    # model that cannot think, which would end the agent's session
    assert "think" not in sent and "reasoning_effort" not in sent and "thinking" not in sent
    line = [json.loads(r.getMessage()) for r in caplog.records if r.name == "gateway_service.access"][-1]
    assert line["status"] == 200 and line["outcome"] == "ok" and line["api"] in ("anthropic/messages", "openai/responses")


def _answered(body: dict[str, Any]) -> bool:
    """The conversation already holds a tool result (the test upstream then answers text)."""
    return any(isinstance(m["content"], list) and any(b.get("type") == "tool_result" for b in m["content"])
               for m in body["messages"])


def test_the_readme_s_coding_agents_snippets_load() -> None:
    """docs/clients-and-agents.md "Coding agents": its gateway TOML loads through the config classes, its Codex
    provider block is TOML with the keys Codex reads."""
    import re
    import tomllib

    from gateway_service.config import DEFAULT_UPSTREAMS, GatewaySettings

    page = (Path(__file__).resolve().parents[2] / "docs" / "clients-and-agents.md").read_text()
    section = page.split("## Coding agents", 1)[1].split("\n## ", 1)[0]
    blocks = [tomllib.loads(block) for block in re.findall(r"```toml\n(.*?)```", section, re.S)]
    assert len(blocks) == 5
    codex, aliases, windows, sessions, hosted = blocks
    assert GatewaySettings(**sessions).turns.session == "sticky"
    assert GatewaySettings(**windows).models["llama3.1:8b"].context_window == 65536
    assert codex["model_providers"]["gateway"]["wire_api"] == "responses" and codex["model_provider"] == "gateway"
    settings = GatewaySettings(model_aliases=aliases["model_aliases"], upstreams=hosted["upstreams"])
    assert [u.model_dump() for u in settings.upstreams[:1]] == [u.model_dump() for u in DEFAULT_UPSTREAMS]
    assert [a.name for a in settings.model_aliases] == ["claude-haiku-*", "claude-*", "gpt-5*"]
    assert settings.upstreams[-1].provider == "anthropic"
    from gateway_service.routing.catalog import ModelCatalog

    catalog = ModelCatalog(settings)
    assert catalog.resolve("claude-haiku-4-5").name == "llama3.2:1b" and catalog.resolve("claude-haiku-4-5").concrete
    assert catalog.resolve("claude-opus-5-5").strong_share == 0.5 and not catalog.resolve("gpt-5.5").concrete
