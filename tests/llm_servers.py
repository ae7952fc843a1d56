"""Test LLM servers that speak Ollama's, OpenAI's and Anthropic's streaming chat wire formats, byte for byte.

- Ollama ``POST /api/chat``: ``application/x-ndjson``, one JSON object a line,
  ``"done": false`` chunks with ``message.content``, then a final ``"done": true``
  object with ``done_reason``, durations, ``prompt_eval_count`` and ``eval_count``.
- OpenAI ``POST /v1/chat/completions``: ``text/event-stream``, ``data: {chunk}``
  events (first delta carries the role), a chunk with ``finish_reason``, a usage
  chunk with ``"choices": []`` when ``stream_options.include_usage`` is set, then
  ``data: [DONE]``. Errors use each server's error JSON.
- Anthropic ``POST /v1/messages``: ``text/event-stream``, an ``event:`` and a ``data:`` line per event:
  ``message_start`` (usage.input_tokens), ``content_block_start`` / ``_delta`` (``text_delta``,
  ``thinking_delta`` and ``signature_delta``, ``input_json_delta``) / ``_stop``, ``ping``,
  ``message_delta`` (stop_reason, usage.output_tokens), ``message_stop``.
- The model lists: Ollama ``GET /api/tags`` and OpenAI ``GET /v1/models`` (Anthropic's has the same ``data[].id``);
  Ollama's ``GET /api/ps`` (loaded models, with ``context_length``) and ``POST /api/show`` (``parameters``, ``model_info``).

Faults are switched on per test: refuse with a status (and Retry-After), stall
before the first byte, cut the stream after N chunks, send a malformed chunk.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

__all__ = ["LLMServerState", "llm_app"]


@dataclass
class LLMServerState:
    reply: tuple[str, ...] = ("Hello", ",", " world", "!")
    chunk_delay_s: float = 0.0
    fail_status: int | None = None
    retry_after: str | None = None
    stall_s: float = 0.0  # before the first byte
    cut_after: int | None = None  # drop the connection after this many content chunks
    malformed_after: int | None = None  # send garbage after this many content chunks
    stall_after: int | None = None  # go silent for stall_s after this many content chunks
    huge_chunk_bytes: int = 0  # one extra content chunk this large
    chaos: float = 0.0  # share of requests that fail at random: HTTP 500, or a cut after one chunk
    echo_key_status: int | None = None  # refuse with this status, echoing the Authorization it got (a careless server)
    models: tuple[str, ...] = ("llama3.1:8b", "llama3.2:1b", "gpt-4o-mini")  # what the model lists name
    no_usage: bool = False  # like llama.cpp's server: no usage chunk, even when asked
    tool_call: tuple[str, str] | None = None  # (name, JSON arguments): answer requests with tools by calling it
    tool_once: bool = False  # as an agent's model: call the tool until the conversation holds a tool result, then answer
    answer: Callable[[dict[str, Any]], tuple[str, ...]] | None = None  # a scripted model: reply pieces per request
    thinking: tuple[str, ...] = ()  # reasoning pieces before the answer (Ollama: message.thinking; OpenAI-compatible: reasoning_content)
    loaded: dict[str, int] = field(default_factory=dict)  # Ollama /api/ps: model -> the context_length it runs with
    trained: dict[str, int] = field(default_factory=dict)  # Ollama /api/show: model -> model_info's context_length
    modelfile_num_ctx: dict[str, int] = field(default_factory=dict)  # /api/show parameters: a Modelfile's num_ctx
    shown: list[str] = field(default_factory=list)  # the models /api/show was asked about
    requests: list[dict[str, Any]] = field(default_factory=list)
    open_streams: int = 0
    closed_early: int = 0  # streams whose client went away before the end

    def calls_tool(self, body: dict[str, Any]) -> bool:
        if not (self.tool_call and body.get("tools")):
            return False
        return not (self.tool_once and any(_is_tool_result(m) for m in body.get("messages", ())))

    def reply_for(self, body: dict[str, Any]) -> tuple[str, ...]:
        return self.answer(body) if self.answer is not None else self.reply

    def prompt_tokens(self, body: dict[str, Any]) -> int:
        return sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))


def _is_tool_result(message: dict[str, Any]) -> bool:
    """An OpenAI or Ollama tool message, or an Anthropic user message holding a tool_result block."""
    content = message.get("content")
    return message.get("role") == "tool" or (
        isinstance(content, list) and any(isinstance(b, dict) and b.get("type") == "tool_result" for b in content))


def llm_app(state: LLMServerState) -> Starlette:
    async def record(request: Request) -> dict[str, Any]:
        body = await request.json()
        state.requests.append({"path": request.url.path, "headers": dict(request.headers), "body": body,
                               "peer": request.client.port if request.client else None})
        if state.stall_s and state.stall_after is None:
            await asyncio.sleep(state.stall_s)
        return body

    async def tracked(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        state.open_streams += 1
        finished = False
        try:
            async for chunk in chunks:
                yield chunk
            finished = True
        finally:
            state.open_streams -= 1
            if not finished:
                state.closed_early += 1

    async def content(body: dict[str, Any], send_garbage: bytes) -> AsyncIterator[tuple[int, str | bytes]]:
        pieces = list(state.reply_for(body)) + (["z" * state.huge_chunk_bytes] if state.huge_chunk_bytes else [])
        for i, piece in enumerate(pieces):
            if state.stall_after is not None and i == state.stall_after:
                await asyncio.sleep(state.stall_s)
            if state.cut_after is not None and i == state.cut_after:
                raise ConnectionResetError("test server cut the stream")  # uvicorn drops the connection
            if state.malformed_after is not None and i == state.malformed_after:
                yield i, send_garbage
                return
            if state.chunk_delay_s:
                await asyncio.sleep(state.chunk_delay_s)
            yield i, piece

    async def ollama_chat(request: Request) -> Response:
        body = await record(request)
        model = body.get("model", "")
        if state.chaos and random.random() < state.chaos:
            if random.random() < 0.5:
                return JSONResponse({"error": "chaos: internal error"}, status_code=500)

            async def cut() -> AsyncIterator[bytes]:
                yield (json.dumps({"model": model, "created_at": "2026-01-01T00:00:00Z",
                                   "message": {"role": "assistant", "content": "Hel"}, "done": False}) + "\n").encode()
                raise ConnectionResetError("chaos: cut")

            return StreamingResponse(tracked(cut()), media_type="application/x-ndjson")
        if state.fail_status:
            headers = {"retry-after": state.retry_after} if state.retry_after else None
            return JSONResponse({"error": "server busy, please try again. maximum pending requests exceeded"},
                                status_code=state.fail_status, headers=headers)

        def line(obj: dict[str, Any]) -> bytes:
            return (json.dumps(obj, separators=(",", ":")) + "\n").encode()

        def stamp() -> str:
            return time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime())

        async def chunks() -> AsyncIterator[bytes]:
            count = 0
            for thought in state.thinking:
                yield line({"model": model, "created_at": stamp(),
                            "message": {"role": "assistant", "content": "", "thinking": thought}, "done": False})
            async for _, piece in content(body, b'{"model":"' + model.encode() + b'","message":{"role":"assis\n'):
                if isinstance(piece, bytes):
                    yield piece
                    return
                count += 1
                yield line({"model": model, "created_at": stamp(),
                            "message": {"role": "assistant", "content": piece}, "done": False})
            yield line({"model": model, "created_at": stamp(), "message": {"role": "assistant", "content": ""},
                        "done_reason": "stop", "done": True, "total_duration": 4883583458, "load_duration": 1334875,
                        "prompt_eval_count": state.prompt_tokens(body), "prompt_eval_duration": 342546000,
                        "eval_count": count, "eval_duration": 4535599000})

        if state.calls_tool(body):  # Ollama sends a whole call in one message, arguments as an object
            assert state.tool_call is not None
            name, arguments = state.tool_call

            async def calls() -> AsyncIterator[bytes]:
                yield line({"model": model, "created_at": stamp(), "message": {"role": "assistant", "content": "",
                            "tool_calls": [{"function": {"name": name, "arguments": json.loads(arguments)}}]}, "done": False})
                yield line({"model": model, "created_at": stamp(), "message": {"role": "assistant", "content": ""},
                            "done_reason": "stop", "done": True, "total_duration": 1200000000, "load_duration": 1334875,
                            "prompt_eval_count": state.prompt_tokens(body), "prompt_eval_duration": 342546000,
                            "eval_count": 18, "eval_duration": 800000000})

            return StreamingResponse(tracked(calls()), media_type="application/x-ndjson")
        if body.get("stream") is False:  # Ollama streams unless told not to; then one object
            return JSONResponse({"model": model, "created_at": stamp(),
                                 "message": {"role": "assistant", "content": "".join(state.reply_for(body))},
                                 "done_reason": "stop", "done": True, "prompt_eval_count": state.prompt_tokens(body),
                                 "eval_count": len(state.reply_for(body))})
        return StreamingResponse(tracked(chunks()), media_type="application/x-ndjson")

    async def openai_chat(request: Request) -> Response:
        body = await record(request)
        model = body.get("model", "")
        if state.echo_key_status:
            given = request.headers.get("authorization", "")
            return JSONResponse(
                {"error": {"message": f"Incorrect API key provided: {given}", "type": "invalid_request_error",
                           "param": None, "code": "invalid_api_key"}},
                status_code=state.echo_key_status,
            )
        if state.fail_status:
            headers = {"retry-after": state.retry_after} if state.retry_after else None
            return JSONResponse(
                {"error": {"message": "Rate limit reached for requests", "type": "requests",
                           "param": None, "code": "rate_limit_exceeded"}},
                status_code=state.fail_status, headers=headers,
            )
        include_usage = bool((body.get("stream_options") or {}).get("include_usage")) and not state.no_usage
        base = {"id": "chatcmpl-test123", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": model, "system_fingerprint": "fp_test"}
        extra = {"usage": None} if include_usage else {}

        def event(choices: list[dict[str, Any]], **more: Any) -> bytes:
            return b"data: " + json.dumps({**base, "choices": choices, **extra, **more}, separators=(",", ":")).encode() + b"\n\n"

        def choice(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}

        async def chunks() -> AsyncIterator[bytes]:
            count = 0
            yield event([choice({"role": "assistant", "content": "", "refusal": None})])
            for thought in state.thinking:
                yield event([choice({"reasoning_content": thought})])
            async for _, piece in content(body, b'data: {"id":"chatcmpl-test123","choices":[{"delta":\n\n'):
                if isinstance(piece, bytes):
                    yield piece
                    return
                count += 1
                yield event([choice({"content": piece})])
            yield event([choice({}, "stop")])
            if include_usage:
                prompt = state.prompt_tokens(body)
                usage = {"prompt_tokens": prompt, "completion_tokens": count, "total_tokens": prompt + count}
                yield event([], usage=usage)
            yield b"data: [DONE]\n\n"

        if state.calls_tool(body) and body.get("stream"):
            assert state.tool_call is not None
            name, arguments = state.tool_call

            async def calls() -> AsyncIterator[bytes]:  # as OpenAI streams a call: name first, then argument fragments
                first = {"index": 0, "id": "call_Xk3p9T2bq7", "type": "function", "function": {"name": name, "arguments": ""}}
                yield event([choice({"role": "assistant", "content": None, "tool_calls": [first], "refusal": None})])
                for start in range(0, len(arguments), 7):
                    yield event([choice({"tool_calls": [{"index": 0, "function": {"arguments": arguments[start:start + 7]}}]})])
                yield event([choice({}, "tool_calls")])
                if include_usage:
                    prompt = state.prompt_tokens(body)
                    yield event([], usage={"prompt_tokens": prompt, "completion_tokens": 18, "total_tokens": prompt + 18})
                yield b"data: [DONE]\n\n"

            return StreamingResponse(tracked(calls()), media_type="text/event-stream")
        if not body.get("stream"):  # OpenAI answers with one JSON object unless stream is true
            prompt, reply = state.prompt_tokens(body), state.reply_for(body)
            return JSONResponse({
                "id": base["id"], "object": "chat.completion", "created": base["created"], "model": model,
                "system_fingerprint": "fp_test",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(reply), "refusal": None},
                             "logprobs": None, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": len(reply),
                          "total_tokens": prompt + len(reply)},
            })
        return StreamingResponse(tracked(chunks()), media_type="text/event-stream")

    async def ollama_tags(request: Request) -> Response:
        if state.fail_status and state.fail_status >= 500:
            return JSONResponse({"error": "server busy, please try again. maximum pending requests exceeded"},
                                status_code=state.fail_status)
        return JSONResponse({"models": [
            {"name": name, "model": name, "modified_at": "2026-11-02T10:41:18.213447503Z", "size": 1321098329,
             "digest": "baf6a787fdffd633537aa2eb51cfd54cb93ff08e28040095462bb63daf552878",
             "details": {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
                         "parameter_size": "1.2B", "quantization_level": "Q8_0"}}
            for name in state.models
        ]})

    async def ollama_ps(request: Request) -> Response:
        return JSONResponse({"models": [
            {"name": name, "model": name, "size": 6591830464,
             "digest": "a2af6cc3eb7fa8be8504abaf9b04e88f17a119ec3f04a3addf55f92841195f5a",
             "details": {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
                         "parameter_size": "8.0B", "quantization_level": "Q4_K_M"},
             "expires_at": "2026-12-07T16:47:07.93355Z", "size_vram": 5333539264, "context_length": window}
            for name, window in state.loaded.items()
        ]})

    async def ollama_show(request: Request) -> Response:
        name = (await request.json()).get("model", "")
        state.shown.append(name)
        if name not in state.models:
            return JSONResponse({"error": f"model '{name}' not found"}, status_code=404)
        parameters = 'stop                           "<|eot_id|>"'
        if name in state.modelfile_num_ctx:
            parameters = f"num_ctx                        {state.modelfile_num_ctx[name]}\n{parameters}"
        info = {"general.architecture": "llama", "general.parameter_count": 8030261312}
        if name in state.trained:
            info["llama.context_length"] = state.trained[name]
        return JSONResponse({
            "license": "LLAMA 3.1 COMMUNITY LICENSE AGREEMENT", "modelfile": f"FROM {name}\n", "parameters": parameters,
            "template": "{{ .Prompt }}", "details": {"parent_model": "", "format": "gguf", "family": "llama",
                                                    "families": ["llama"], "parameter_size": "8.0B",
                                                    "quantization_level": "Q4_K_M"},
            "model_info": info, "capabilities": ["completion", "tools"], "modified_at": "2026-11-02T10:41:18.21Z",
        })

    async def openai_models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [
            {"id": name, "object": "model", "created": 1721172741, "owned_by": "system"} for name in state.models
        ]})

    async def anthropic_messages(request: Request) -> Response:
        """Anthropic's stream, as its API writes it: an ``event:`` line and a ``data:`` line per event."""
        body = await record(request)
        model = body.get("model", "")
        if state.fail_status:
            kind = "overloaded_error" if state.fail_status == 529 else "rate_limit_error"
            return JSONResponse({"type": "error", "error": {"type": kind, "message": "Overloaded"}},
                                status_code=state.fail_status)

        def event(kind: str, data: dict[str, Any]) -> bytes:
            return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()

        prompt = sum(len(json.dumps(m.get("content", "")).split()) for m in body.get("messages", []))

        async def chunks() -> AsyncIterator[bytes]:
            yield event("message_start", {"type": "message_start", "message": {
                "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": None, "stop_sequence": None, "usage": {
                    "input_tokens": prompt, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 3, "output_tokens": 1}}})
            index, count = 0, 0
            if state.thinking:
                yield event("content_block_start", {"type": "content_block_start", "index": index,
                                                    "content_block": {"type": "thinking", "thinking": "", "signature": ""}})
                for thought in state.thinking:
                    yield event("content_block_delta", {"type": "content_block_delta", "index": index,
                                                        "delta": {"type": "thinking_delta", "thinking": thought}})
                yield event("content_block_delta", {"type": "content_block_delta", "index": index,
                                                    "delta": {"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3h"}})
                yield event("content_block_stop", {"type": "content_block_stop", "index": index})
                index += 1
            if state.calls_tool(body):
                assert state.tool_call is not None
                name, arguments = state.tool_call
                yield event("content_block_start", {"type": "content_block_start", "index": index, "content_block": {
                    "type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": name, "input": {}}})
                for start in range(0, len(arguments), 7):
                    yield event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": {
                        "type": "input_json_delta", "partial_json": arguments[start:start + 7]}})
                yield event("content_block_stop", {"type": "content_block_stop", "index": index})
                stop, count = "tool_use", 18
            else:
                yield event("content_block_start", {"type": "content_block_start", "index": index,
                                                    "content_block": {"type": "text", "text": ""}})
                yield event("ping", {"type": "ping"})
                async for _, piece in content(body, b"event: content_block_delta\ndata: {\"type\":\"content_bl\n\n"):
                    if isinstance(piece, bytes):
                        yield piece
                        return
                    count += 1
                    yield event("content_block_delta", {"type": "content_block_delta", "index": index,
                                                        "delta": {"type": "text_delta", "text": piece}})
                yield event("content_block_stop", {"type": "content_block_stop", "index": index})
                stop = "end_turn"
            yield event("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                                          "usage": {"output_tokens": count}})
            yield event("message_stop", {"type": "message_stop"})

        return StreamingResponse(tracked(chunks()), media_type="text/event-stream")

    return Starlette(
        routes=[
            Route("/v1/messages", anthropic_messages, methods=["POST"]),
            Route("/api/chat", ollama_chat, methods=["POST"]),
            Route("/api/tags", ollama_tags, methods=["GET"]),
            Route("/api/ps", ollama_ps, methods=["GET"]),
            Route("/api/show", ollama_show, methods=["POST"]),
            Route("/v1/chat/completions", openai_chat, methods=["POST"]),
            Route("/v1/models", openai_models, methods=["GET"]),
        ]
    )
