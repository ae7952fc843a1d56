"""Capture: a sample of routed prompts and their decisions written to rotating JSONL files, opt-in."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import openai
import pytest

from gateway_service.server import GatewayApp, build_gateway
from tests.gateway.conftest import STRONG, WEAK, gateway_settings
from tests.http_servers import serve_app
from tests.llm_servers import LLMServerState, llm_app

KEY = "sk-client-key-never-stored"


@asynccontextmanager
async def capturing_gateway(router_port: int, **capture: Any) -> AsyncIterator[GatewayApp]:
    ollama, other = LLMServerState(), LLMServerState()
    async with serve_app(llm_app(ollama)) as ollama_url, serve_app(llm_app(other)) as openai_url:
        settings = gateway_settings(
            router_port, ollama_url, openai_url, capture=capture, callers=[{"name": "notebooks", "api_keys": [KEY]}]
        )
        app = await build_gateway(settings)
        try:
            yield app
        finally:
            await app.stop()


def lines(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for path in sorted(folder.glob("prompts.jsonl*")) for line in path.read_text().splitlines()]


async def ask(app: GatewayApp, model: str, text: str, stream: bool = True) -> str:
    async with openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{app.http_port}/v1", api_key=KEY, max_retries=0) as sdk:
        messages: Any = [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "an earlier question"},
            {"role": "assistant", "content": "an earlier answer"},
            {"role": "user", "content": text},
        ]
        if stream:
            chunks = await sdk.chat.completions.create(model=model, messages=messages, stream=True)
            return "".join([c.choices[0].delta.content or "" async for c in chunks if c.choices])
        reply = await sdk.chat.completions.create(model=model, messages=messages)
        return reply.choices[0].message.content or ""


async def test_routed_prompts_and_decisions_are_captured_but_never_keys_or_other_turns(router_app, tmp_path) -> None:
    async with capturing_gateway(router_app.port, enabled=True, rate=1.0, dir=tmp_path) as app:
        await ask(app, "router", "Say hi.")
        await ask(app, "router-mf-50", "Prove that there are infinitely many primes.", stream=False)
        await ask(app, STRONG, "A concrete model: no routing, nothing to learn from.")

    records = lines(tmp_path)
    assert [r["prompt"] for r in records] == ["Say hi.", "Prove that there are infinitely many primes."]
    first = records[0]
    assert first["requested"] == "router" and first["model"] in (STRONG, WEAK)
    assert first["scorer"] == "difficulty" and first["scorer_version"] and first["outcome"] == "ok"
    assert isinstance(first["routed_strong"], bool) and 0.0 <= first["score"] <= 1.0 and "threshold" in first
    assert "completion" not in first  # completions only when capture.completions says so
    assert {r["caller"] for r in records} == {"notebooks"}  # the caller's name, never its key
    text = "".join(path.read_text() for path in tmp_path.iterdir())
    assert KEY not in text and "an earlier" not in text and "You are terse" not in text


async def test_completions_are_stored_only_when_asked(router_app, tmp_path) -> None:
    async with capturing_gateway(router_app.port, enabled=True, rate=1.0, dir=tmp_path, completions=True) as app:
        answer = await ask(app, "router", "Say hi.")
    (record,) = lines(tmp_path)
    assert record["completion"] == answer == "Hello, world!" and record["finish_reason"] == "stop"


async def test_capture_is_off_by_default_and_sampled_at_its_rate(router_app, tmp_path) -> None:
    async with capturing_gateway(router_app.port, dir=tmp_path / "off", rate=1.0) as app:
        await ask(app, "router", "hello")
    assert not (tmp_path / "off").exists()
    async with capturing_gateway(router_app.port, enabled=True, dir=tmp_path / "none", rate=0.0) as app:
        for i in range(5):
            await ask(app, "router", f"hello {i}")
    assert lines(tmp_path / "none") == []


async def test_files_rotate_and_only_max_files_are_kept(router_app, tmp_path) -> None:
    async with capturing_gateway(router_app.port, enabled=True, rate=1.0, dir=tmp_path, max_file_mb=0.0005, max_files=2) as app:
        for i in range(12):
            await ask(app, "router", f"question number {i} " + "x" * 100)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prompts.jsonl", "prompts.jsonl.1", "prompts.jsonl.2"]
    kept = [int(r["prompt"].split()[2]) for r in lines(tmp_path)]
    assert 11 in kept and 0 not in kept  # the newest stay, the oldest went


def test_a_failing_capture_file_is_one_warning_not_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    import logging

    from gateway_service.accounting.capture import _CaptureFile

    handler = _CaptureFile(tmp_path / "prompts.jsonl", maxBytes=1000, backupCount=1)
    handler.setFormatter(logging.Formatter("%(message)s"))
    record = logging.LogRecord("capture", logging.INFO, __file__, 1, "a line", None, None)
    handler.emit(record)
    assert handler.stream is not None
    handler.stream.close()  # as if the disk had gone away
    with caplog.at_level(logging.WARNING, logger="gateway_service.accounting.capture"):
        handler.emit(record)
        handler.emit(record)
    assert [r.getMessage() for r in caplog.records].count(
        f"capture: writing {tmp_path / 'prompts.jsonl'} failed; records are dropped until it works again"
    ) == 1
    assert "Traceback" not in capsys.readouterr().err
    handler.stream = handler._open()  # it works again
    handler.emit(record)
    assert not handler.failing and (tmp_path / "prompts.jsonl").read_text().count("a line") == 2
    handler.close()
