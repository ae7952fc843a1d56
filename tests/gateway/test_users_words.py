"""Route on the user's words (#37): client boilerplate is set aside before the router is asked.

Every recorded request of Claude Code, Codex and Open WebUI (../shared/clients) is parsed by the gateway's own
codec; the text routed for it is what the user typed (Claude Code's ``<system-reminder>`` blocks and Codex's
AGENTS.md / ``<environment_context>`` messages set aside). Then a hard prompt and "hi" dropped into the same
recorded Claude Code request go strong and weak through a real router, and the capture record says what was
routed on.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway_service.apis.anthropic_wire import MessagesRequest
from gateway_service.apis.ollama import _ChatRequest
from gateway_service.apis.ollama import _params as _ollama_params
from gateway_service.apis.openai_responses_wire import ResponsesRequest
from gateway_service.apis.openai_wire import ChatCompletionRequest
from gateway_service.domain import ChatParams, Message
from gateway_service.routing.words import ROUTED_HEAD, ROUTED_TAIL, users_words
from gateway_service.server import build_gateway
from tests.gateway.conftest import STRONG, WEAK, Stack, gateway_settings
from tests.gateway.test_agent_replay import CLIENTS, DROPPED_HEADERS

pytestmark = pytest.mark.skipif(not CLIENTS.exists(), reason="../shared/clients is not beside this checkout")

TYPED = {  # what the user typed in each recorded session (../shared/clients/README.md)
    "claude-code-2.1.328": {"List the files here with ls, then tell me what hello.py prints.",
                            "Explain what a race condition is in two sentences."},
    "codex-0.169.0": {"What files are in this directory? Use ls.", "Write a haiku about autumn."},
}
BOILERPLATE = ("<system-reminder>", "<environment_context>", "# AGENTS.md instructions", "<permissions instructions>")
HARD = ("Prove that every planar graph is 5-colourable, then give an O(n) algorithm that finds such a colouring "
        "and prove its running time.")


def _recorded(folder: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (CLIENTS / folder / "requests.jsonl").read_text().splitlines()]


def _params(folder: str, body: dict[str, Any], path: str = "") -> ChatParams:
    if folder.startswith("claude-code"):
        return MessagesRequest.model_validate(body).params()
    if folder.startswith("codex"):
        return ResponsesRequest.model_validate(body).params()
    if path == "/api/chat":  # Open WebUI's Ollama connection
        chat = _ChatRequest.model_validate(body)
        return _ollama_params(chat.messages, chat)
    return ChatCompletionRequest.model_validate(body).params()


def _is_title_request(body: dict[str, Any]) -> bool:
    """Claude Code's session-title request: no tools, the user's words quoted inside ``<session>``."""
    return not body.get("tools") and "naming a coding session" in json.dumps(body.get("system"))


@pytest.mark.parametrize("folder", ["claude-code-2.1.328", "codex-0.169.0"])
def test_each_recorded_agent_request_is_routed_on_the_typed_prompt(folder: str) -> None:
    for request in _recorded(folder):
        body = request["body"]
        text = users_words(_params(folder, body))
        assert text is not None
        if _is_title_request(body):  # a background task: its instruction is the point, routed as it is
            assert text.words.startswith("<session>") and not text.set_aside
            assert "naming a coding session" in text.system
            continue
        assert text.words in TYPED[folder], text.words[:300]
        assert not any(marker in text.words for marker in BOILERPLATE)


def test_claude_code_s_reminders_and_codex_s_context_are_named_where_set_aside() -> None:
    claude = users_words(_params("claude-code-2.1.328", _recorded("claude-code-2.1.328")[1]["body"]))
    codex = users_words(_params("codex-0.169.0", _recorded("codex-0.169.0")[0]["body"]))
    assert claude is not None and claude.set_aside == ("claude-code:system-reminder",)
    # Codex's context is messages of their own before the prompt: the last user message is already the prompt
    assert codex is not None and codex.words == "What files are in this directory? Use ls." and not codex.set_aside
    assert codex.system.startswith("You are a coding agent running in the Codex CLI")


def test_open_webui_s_requests_keep_their_words_and_its_rag_wrapper_is_set_aside() -> None:
    for request in _recorded("open-webui-0.12.4"):
        body = request["body"] or {}
        if not body.get("messages"):
            continue
        text = users_words(_params("open-webui", body, request["path"]))
        last = [m["content"] for m in body["messages"] if m["role"] == "user"][-1]
        assert text is not None and text.words == last.strip() and not text.set_aside
    # Open WebUI's RAG template, as it wraps a question asked over an attached file (its shape; our words)
    wrapped = ("### Task:\nRespond to the user query using the provided context, citing [id] where given.\n\n"
               "### Guidelines:\n- Answer in the user's language.\n\n<context>\n<source id=\"1\">Q3 revenue rose 12% "
               "to 4.1M.</source>\n</context>\n\n<user_query>\nWhat drove the revenue growth?\n</user_query>\n")
    text = users_words(ChatParams((Message.of("user", wrapped),)))
    assert text is not None and text.words == "What drove the revenue growth?" and text.set_aside == ("open-webui:rag",)
    older = ("You are given a user query, some textual context and rules, all inside xml tags.\n\n<context>\nQ3 "
             "revenue rose 12%.\n</context>\n\n<rules>\n- Answer from the context.\n</rules>\n\n<user_query>\n"
             "Why did revenue grow?\n</user_query>")
    text = users_words(ChatParams((Message.of("user", older),)))
    assert text is not None and text.words == "Why did revenue grow?"
    typed = "What does <user_query>x</user_query> mean in this template?"  # no <context>: the user's own words
    text = users_words(ChatParams((Message.of("user", typed),)))
    assert text is not None and text.words == typed and not text.set_aside


def test_codex_context_blocks_joined_in_one_message_are_peeled_off() -> None:
    """Codex may send AGENTS.md and the environment as parts of one message before the prompt."""
    joined = ("# AGENTS.md instructions for /repo\n\n<INSTRUCTIONS>\nUse pytest.\n</INSTRUCTIONS>\n"
              "<environment_context>\n  <cwd>/repo</cwd>\n</environment_context>")
    params = ChatParams((Message.of("developer", "You are Codex."), Message.of("user", joined),
                         Message.of("user", "Why is the build red?")))
    text = users_words(params)
    assert text is not None and text.words == "Why is the build red?"
    only = users_words(ChatParams((Message.of("user", joined + "\nWhy is the build red?"),)))
    assert only is not None and only.words == "Why is the build red?"
    assert only.set_aside == ("codex:agents-md", "codex:environment-context")
    # nothing but boilerplate: routed on it as it came, never refused
    bare = users_words(ChatParams((Message.of("user", joined),)))
    assert bare is not None and bare.words == joined and not bare.set_aside


def test_a_pasted_log_is_routed_on_its_head_and_its_ask() -> None:
    log = "ERROR at line\n" * 20_000 + "Why does this fail?"
    text = users_words(ChatParams((Message.of("user", log),)))
    assert text is not None and len(text.words) <= ROUTED_HEAD + ROUTED_TAIL + 3
    assert text.words.endswith("Why does this fail?")


def _claude_code_turn(words: str) -> dict[str, Any]:
    """The recorded Claude Code request of its first turn, with ``words`` typed instead."""
    request = copy.deepcopy(_recorded("claude-code-2.1.328")[1])
    blocks = request["body"]["messages"][0]["content"]
    typed = next(b for b in blocks if b.get("type") == "text" and b["text"] in TYPED["claude-code-2.1.328"])
    typed["text"] = words
    return request


async def test_a_hard_prompt_and_hi_in_the_same_claude_code_request_route_strong_and_weak(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway_service.access")
    models = {}
    async with httpx.AsyncClient(timeout=30) as http:
        for words in (HARD, "hi"):
            request = _claude_code_turn(words)
            headers = {k: v for k, v in request["headers"].items() if k not in DROPPED_HEADERS}
            answer = await http.post(f"http://127.0.0.1:{stack.gateway.http_port}{request['path']}",
                                     json=request["body"], headers=headers)
            assert answer.status_code == 200, answer.text[:300]
            models[words] = answer.headers["x-route-model"]
    assert models == {HARD: STRONG, "hi": WEAK}
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "gateway_service.access"]
    assert [line["set_aside"] for line in lines[-2:]] == [["claude-code:system-reminder"]] * 2


async def test_the_capture_record_holds_the_words_routed_on(router_app, tmp_path: Path) -> None:
    from tests.http_servers import serve_app
    from tests.llm_servers import LLMServerState, llm_app

    ollama, openai = LLMServerState(), LLMServerState()
    async with serve_app(llm_app(ollama)) as ollama_url, serve_app(llm_app(openai)) as openai_url:
        settings = gateway_settings(router_app.port, ollama_url, openai_url,
                                    capture={"enabled": True, "dir": str(tmp_path), "rate": 1.0})
        gateway = await build_gateway(settings)
        try:
            request = _claude_code_turn("Explain what a race condition is in two sentences.")
            headers = {k: v for k, v in request["headers"].items() if k not in DROPPED_HEADERS}
            async with httpx.AsyncClient(timeout=30) as http:
                answer = await http.post(f"http://127.0.0.1:{gateway.http_port}{request['path']}",
                                         json=request["body"], headers=headers)
            assert answer.status_code == 200, answer.text[:300]
        finally:
            await gateway.stop()
    record = json.loads((tmp_path / "prompts.jsonl").read_text().splitlines()[-1])
    assert record["prompt"] == "Explain what a race condition is in two sentences."
    assert record["set_aside"] == ["claude-code:system-reminder"]


async def test_an_agent_session_of_thousands_of_messages_is_answered(stack: Stack) -> None:
    """An agent's loop reached 502 messages and was refused (limits.max_messages was 500), ending the session."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Fix the failing tests."}]
    for i in range(1_500):
        messages.append({"role": "assistant", "content": [{"type": "tool_use", "id": f"t{i}", "name": "Bash",
                                                          "input": {"command": f"pytest -x tests/test_{i}.py"}}]})
        messages.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"t{i}", "content": "ok"}]})
    messages.append({"role": "user", "content": "hi"})
    body = {"model": "claude-opus-5-5", "max_tokens": 1024, "messages": messages,
            "tools": [{"name": "Bash", "input_schema": {"type": "object"}}]}
    async with httpx.AsyncClient(timeout=30) as http:
        answer = await http.post(f"http://127.0.0.1:{stack.gateway.http_port}/v1/messages", json=body)
    assert answer.status_code == 200, answer.text[:300]
    assert answer.headers["x-route-model"] == WEAK  # routed on its last user turn: "hi"


def test_unclosed_tags_in_a_huge_message_are_kept_as_they_are() -> None:
    """20,000 unclosed <system-reminder> tags (1.3 MB): a lazy regular expression took 139 s of the event loop on
    them (past this suite's timeout); found with str.find, they are kept, in one pass."""
    flood = ("<system-reminder>" + "a" * 50) * 20_000
    for text in (flood, "</system-reminder>" + flood):
        routed = users_words(ChatParams((Message.of("user", text),)))
        assert routed is not None and not routed.set_aside and routed.words.startswith(text[:40])
    spans = users_words(ChatParams((Message.of("user", "<system-reminder>x</system-reminder>\n hi <system-reminder>y"
                                                        "</system-reminder> there"),)))
    assert spans is not None and spans.words == "hi there"
