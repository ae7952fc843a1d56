"""Ollama's own API on the gateway: /api/chat, /api/generate, /api/embed, /api/tags, /api/show, /api/ps, /api/version.

So ``OLLAMA_HOST=gateway:8000``, the ``ollama`` Python client and other Ollama clients
work unchanged, with the same routing (``model: "router"``, ``router-mf-50``, a concrete
model). Requests become the gateway's own chat request (OpenAI semantics: ``format`` ->
``response_format``, ``options.num_predict`` -> ``max_tokens``, images -> image parts,
tool calls -> OpenAI's with ids, ``tools`` as they are; the rest of ``options``,
``keep_alive`` and ``think`` go to Ollama upstreams as they are); answers are Ollama's
NDJSON stream or single object (whole tool calls, ``thinking``), and errors Ollama's
``{"error": ...}``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..config import LimitSettings
from ..core.chat import ChatService
from ..core.exchange import Exchange
from ..domain import (
    ChatParams,
    Delta,
    Finish,
    Image,
    Message,
    OutputFormat,
    Part,
    ReasoningAsk,
    RouteDecision,
    Text,
    Tool,
    ToolCall,
    ToolResult,
)
from ..errors import GatewayError, InvalidRequest, ModelNotFound, TooLarge, UpstreamStreamError
from ..toolcalls import ToolCallAssembler, arguments_object
from .body import read_json, validated
from .chat_api import Answer, ParsedChat, serve_chat
from .headers import route_headers

__all__ = ["OllamaApi", "OllamaCodec"]

logger = logging.getLogger(__name__)
Body = TypeVar("Body", bound=BaseModel)

# options with an OpenAI equivalent; the others (num_ctx, ...) go to Ollama upstreams as they are
MAPPED_OPTIONS = {"temperature": "temperature", "top_p": "top_p", "num_predict": "max_tokens", "seed": "seed"}


def _base64(images: list[str] | None) -> list[str] | None:
    for i, image in enumerate(images or ()):
        try:
            base64.b64decode(image, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"images[{i}] is not base64 (Ollama takes an image as its base64 bytes)") from None
    return images


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore")  # as Ollama: fields it does not know are ignored

    role: str
    content: str = ""
    images: list[str] | None = None
    tool_calls: list[dict[str, Any]] | None = None  # Ollama's whole calls: {"function": {"name", "arguments": {...}}}
    tool_name: str | None = None  # on a tool answer: which tool it answers
    tool_call_id: str | None = None  # on a tool answer, from OpenAI-minded clients (Open WebUI): which call
    thinking: str | None = None  # an earlier answer's reasoning, sent back: not passed on (as Ollama does)

    _images_are_base64 = field_validator("images")(_base64)


class _Options(BaseModel):
    """The options with an OpenAI equivalent, checked; the others (num_ctx, ...) go to Ollama upstreams as sent."""

    model_config = ConfigDict(extra="allow")

    temperature: float | None = None
    top_p: float | None = None
    num_predict: int | None = Field(None, ge=-2)  # -1: no limit, -2: fill the context (Ollama's meanings)
    seed: int | None = None
    stop: str | list[str] | None = None


class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    stream: bool = True
    format: str | dict[str, Any] | None = None
    options: _Options | None = None
    keep_alive: str | int | float | None = None
    tools: list[dict[str, Any]] | None = None
    think: bool | str | None = None

    def settings(self) -> dict[str, Any]:
        """ChatParams keyword arguments from options, format, tools, think and keep_alive; the options without
        an equivalent elsewhere (num_ctx, ...) and keep_alive go to Ollama upstreams as they are."""
        known: dict[str, Any] = {}
        rest: dict[str, Any] = {}
        if self.options is not None:
            given = self.options.model_dump(exclude_unset=True)
            for name, value in given.items():
                if name == "num_predict" and value is not None and value < 0:
                    rest[name] = value  # no OpenAI equivalent: no max_tokens; an Ollama upstream gets it as sent
                elif name == "stop":
                    known["stop"] = (value,) if isinstance(value, str) else tuple(value or ())
                elif name in MAPPED_OPTIONS:
                    known[MAPPED_OPTIONS[name]] = value
                else:
                    rest[name] = value
        own: dict[str, Any] = {}
        if rest:
            own["options"] = rest
        if self.keep_alive is not None:
            own["keep_alive"] = self.keep_alive
        if own:
            known["passthrough"] = {"ollama": own}
        if self.tools:
            known["tools"] = tuple(_tool(raw, i) for i, raw in enumerate(self.tools))  # OpenAI's function tools
        if isinstance(self.think, str):
            known["reasoning"] = ReasoningAsk(enabled=True, effort=self.think)
        elif self.think is not None:
            known["reasoning"] = ReasoningAsk(enabled=self.think)
        if self.format == "json":
            known["output"] = OutputFormat("json")
        elif isinstance(self.format, dict):
            known["output"] = OutputFormat("json_schema", self.format, "format")
        elif self.format:
            raise InvalidRequest(f"format {self.format!r}: give \"json\" or a JSON schema")
        return known


class _EmbedRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    input: str | list[str] = ""
    truncate: bool | None = None
    dimensions: int | None = None
    options: dict[str, Any] | None = None
    keep_alive: str | int | float | None = None


class _LegacyEmbedRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    prompt: str = ""
    options: dict[str, Any] | None = None
    keep_alive: str | int | float | None = None


class _ShowRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # verbose, and whatever newer clients add

    model: str | None = None
    name: str | None = None  # older clients' name for it


class _ChatRequest(_Common):
    messages: list[_Message] = []


class _GenerateRequest(_Common):
    prompt: str = ""
    system: str | None = None
    images: list[str] | None = None

    _images_are_base64 = field_validator("images")(_base64)


def _shape(body: Any, limits: LimitSettings) -> None:
    """Refuse a parsed body that is too big, counted before it is validated (see body.py)."""
    if not isinstance(body, dict):
        return
    messages = body.get("messages")
    if isinstance(messages, list) and len(messages) > limits.max_messages:
        raise InvalidRequest(f"{len(messages)} messages, more than limits.max_messages={limits.max_messages}")
    images = len(body["images"]) if isinstance(body.get("images"), list) else 0
    for message in messages if isinstance(messages, list) else ():
        if isinstance(message, dict) and isinstance(message.get("images"), list):
            images += len(message["images"])
    if images > limits.max_images:
        raise TooLarge(f"{images} images, more than limits.max_images={limits.max_images}")


def _ignored(body: Any, schema: type[BaseModel]) -> None:
    """Fields Ollama would ignore are ignored here too (clients send what newer servers take): said at debug."""
    if isinstance(body, dict) and logger.isEnabledFor(logging.DEBUG):
        unknown = sorted(set(body) - set(schema.model_fields))
        if unknown:
            logger.debug("ignoring fields this gateway does not take: %s", unknown[:20])


def _media_type(data: str) -> str:
    """An Ollama image's type (base64, no type given), from the bytes' signature."""
    head = base64.b64decode(data[:16] + "=" * (-len(data[:16]) % 4), validate=False)
    kind = "png" if head.startswith(b"\x89PNG") else "gif" if head.startswith(b"GIF8") else \
        "webp" if head[8:12] == b"WEBP" else "jpeg"
    return f"image/{kind}"


def _params(messages: list[_Message], common: _Common) -> ChatParams:
    typed: list[Message] = []
    unanswered: list[tuple[str, str]] = []  # (id, tool name) of the calls made so far and not yet answered
    calls_made = 0
    for i, m in enumerate(messages):
        parts: list[Part] = [Text(m.content)] if m.content else []
        parts += [Image(_media_type(image), image) for image in m.images or ()]
        for call in m.tool_calls or ():  # an id per call, arguments as JSON text
            function = call.get("function") if isinstance(call, dict) else None
            if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                raise InvalidRequest(f"messages[{i}].tool_calls: each needs function.name")
            if not isinstance(function.get("arguments") or {}, dict):
                raise InvalidRequest(f"messages[{i}].tool_calls: function.arguments must be an object")
            given = call.get("id")
            call_id = given if isinstance(given, str) and given else f"call_{calls_made}"
            calls_made += 1
            unanswered.append((call_id, function["name"]))
            parts.append(ToolCall(call_id, function["name"], json.dumps(function.get("arguments") or {})))
        if m.role == "tool":  # answers the call it names, or the call of that tool, or the oldest
            match = next((c for c in unanswered if c[0] == m.tool_call_id), None) or next(
                (c for c in unanswered if c[1] == m.tool_name), unanswered[0] if unanswered else ("", ""))
            if match in unanswered:
                unanswered.remove(match)
            content = tuple(p for p in parts if isinstance(p, Text | Image))
            typed.append(Message("tool", (ToolResult(match[0], content, name=m.tool_name or match[1]),)))
            continue
        typed.append(Message(m.role, tuple(parts)))
    return ChatParams(messages=tuple(typed), **common.settings())


def _tool(raw: dict[str, Any], i: int) -> Tool:
    function = raw.get("function") if isinstance(raw, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise InvalidRequest(f"tools[{i}]: a function tool needs function.name")
    parameters = function.get("parameters")
    return Tool(function["name"], str(function.get("description") or ""),
                parameters if isinstance(parameters, dict) else {"type": "object", "properties": {}})


def _is_load(body: _Common) -> bool:
    """Nothing to answer: no messages, or an empty prompt without images (Ollama loads the model, or unloads it)."""
    if isinstance(body, _ChatRequest):
        return not body.messages
    return isinstance(body, _GenerateRequest) and not body.prompt and not body.images and not body.system


def _details(owner: str) -> dict[str, Any]:
    """A model's ``details`` as Ollama lists them: the family is the upstream serving it (or "router")."""
    return {"parent_model": "", "format": "", "family": owner, "families": [owner], "parameter_size": "",
            "quantization_level": ""}


def _stamp() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e9):09d}Z"


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def _whole_call(call: ToolCall) -> dict[str, Any]:
    try:
        arguments = arguments_object(call)
    except ValueError as exc:
        raise UpstreamStreamError(str(exc)) from None
    return {"function": {"name": call.name, "arguments": arguments}}


class OllamaCodec:
    """A refusal as Ollama's ``{"error": ...}``, with the error's status."""

    def refusal(self, error: GatewayError, x: Exchange) -> Response:
        message = f"model '{x.requested}' not found" if isinstance(error, ModelNotFound) and x.api == "ollama/show" else str(error)
        headers = x.id_headers() | ({"retry-after": error.retry_after} if error.retry_after else {})
        if error.route is not None:
            headers |= route_headers(error.route)
        return JSONResponse({"error": message}, status_code=error.http_status, headers=headers)


class OllamaApi:
    def __init__(self, chat: ChatService) -> None:
        self._chat = chat

    async def _read(self, request: Request, schema: type[Body]) -> Body:
        body = await read_json(request, self._chat.limits)
        _ignored(body, schema)
        return validated(schema, body, self._chat.limits, _shape)

    async def chat(self, request: Request, x: Exchange) -> Response:
        return await self._answer(await self._read(request, _ChatRequest), x, "message")

    async def generate(self, request: Request, x: Exchange) -> Response:
        return await self._answer(await self._read(request, _GenerateRequest), x, "response")

    async def tags(self, request: Request, x: Exchange) -> Response:
        models = [
            {"name": name, "model": name, "modified_at": "2026-01-01T00:00:00Z", "size": 0, "digest": "",
             "details": _details(owner)}
            for name, owner, _ in self._chat.models()
        ]
        return JSONResponse({"models": models}, headers=x.id_headers())

    async def embed(self, request: Request, x: Exchange) -> Response:
        """Ollama's ``POST /api/embed``: ``input`` (a string or strings) -> ``embeddings``."""
        return await self._embed(await self._read(request, _EmbedRequest), x)

    async def embeddings(self, request: Request, x: Exchange) -> Response:
        """Ollama's older ``POST /api/embeddings``: one ``prompt`` -> one ``embedding``."""
        return await self._embed(await self._read(request, _LegacyEmbedRequest), x)

    async def _embed(self, body: _EmbedRequest | _LegacyEmbedRequest, x: Exchange) -> Response:
        x.requested = body.model
        given = body.prompt if isinstance(body, _LegacyEmbedRequest) else body.input
        options = body.model_dump(exclude={"model", "input", "prompt"}, exclude_none=True)
        embedded = await self._chat.embeddings.embed(body.model, given, options)
        if isinstance(body, _LegacyEmbedRequest):
            return JSONResponse({"embedding": embedded.vectors[0]}, headers=x.id_headers())
        answer: dict[str, Any] = {
            "model": body.model, "embeddings": embedded.vectors,
            "total_duration": int((time.perf_counter() - x.started) * 1e9), "load_duration": 0,
        }
        if embedded.prompt_tokens is not None:
            answer["prompt_eval_count"] = embedded.prompt_tokens
        return JSONResponse(answer, headers=x.id_headers())

    async def show(self, request: Request, x: Exchange) -> Response:
        """Enough for Ollama clients that ask before they chat (the ollama CLI, Open WebUI): the model's
        family (its upstream) and capabilities; the gateway has no weights, template or parameters to show."""
        body = await self._read(request, _ShowRequest)
        name = x.requested = body.model or body.name or ""
        can = self._chat.capabilities(name)
        owner = next((o for n, o, _ in self._chat.models() if n == name), "router")
        window = self._chat.context_window(name)
        info = {"general.architecture": "routestack", "routestack.context_length": window} if window else {}
        return JSONResponse({
            "modelfile": f"# {name}: served through the routestack gateway\n", "parameters": "", "template": "",
            "details": _details(owner), "model_info": info, "modified_at": "2026-01-01T00:00:00Z",
            "capabilities": ["completion", *(c for c in ("tools", "vision") if c in can)],
        }, headers=x.id_headers())

    async def ps(self, request: Request, x: Exchange) -> Response:
        """Ollama lists the models loaded in memory; the gateway loads none (its upstreams do)."""
        return JSONResponse({"models": []}, headers=x.id_headers())

    async def version(self, request: Request, x: Exchange) -> Response:
        try:
            ours = version("routestack")
        except PackageNotFoundError:  # run from a source tree
            ours = "0.0.0"
        return JSONResponse({"version": ours}, headers=x.id_headers())

    async def _answer(self, body: _Common, x: Exchange, field: str) -> Response:
        x.requested = body.model
        if _is_load(body):  # Ollama's "load this model" (or unload): the ollama CLI sends one before a chat
            self._chat.catalog.resolve(body.model)  # an unknown name is still a 404
            reason = "unload" if body.keep_alive in (0, "0", "0s") else "load"
            done: dict[str, Any] = {"model": body.model, "created_at": _stamp(), "done": True, "done_reason": reason}
            done.update({"message": {"role": "assistant", "content": ""}} if field == "message" else {"response": ""})
            return JSONResponse(done, headers=x.id_headers())
        if isinstance(body, _ChatRequest):
            params = _params(body.messages, body)
        else:
            assert isinstance(body, _GenerateRequest)
            messages = ([_Message(role="system", content=body.system)] if body.system else []) + [
                _Message(role="user", content=body.prompt, images=body.images)
            ]
            params = _params(messages, body)
        return await serve_chat(self._chat, _OLLAMA, ParsedChat(body.model, params, body.stream, field), x)


class _Lines:
    """Ollama's NDJSON stream: text and thinking pieces, each tool call whole (arguments as an object) before the
    last line, then the last line with the counts. A failure after the first line is a last line ``{"error": ...}``."""

    def __init__(self, route: RouteDecision, x: Exchange, field: str) -> None:
        self._model, self._x, self._field = route.model, x, field
        self._calls = ToolCallAssembler()

    def piece(self, text: str, thinking: str = "", tool_calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        item: dict[str, Any] = {"model": self._model, "created_at": _stamp()}
        if self._field == "message":
            part: dict[str, Any] = {"role": "assistant", "content": text}
            item["message"] = part
        else:
            part = item
            item["response"] = text
        item["done"] = False
        if thinking:
            part["thinking"] = thinking
        if tool_calls:
            part["tool_calls"] = tool_calls
        return item

    def final(self, finish: Finish) -> dict[str, Any]:
        final = self.piece("")
        final.update(done=True, done_reason="stop" if finish.reason == "tool_calls" else finish.reason,
                     total_duration=int((time.perf_counter() - self._x.started) * 1e9), load_duration=0)
        if finish.usage is not None:  # unknown counts are left out, never 0
            final.update(prompt_eval_count=finish.usage.prompt_tokens, eval_count=finish.usage.completion_tokens)
        return final

    def event(self, event: Delta | Finish) -> bytes:
        if isinstance(event, Delta):
            self._calls.add(event.tool_calls)
            return _line(self.piece(event.text, event.reasoning)) if event.text or event.reasoning else b""
        out = b""
        if self._calls:
            out = _line(self.piece("", tool_calls=[_whole_call(call) for call in self._calls.calls()]))
        return out + _line(self.final(event))

    def failed(self, error: GatewayError) -> bytes:
        return _line({"error": str(error)})


class _OllamaCodec:
    media_type = "application/x-ndjson"

    def writer(self, parsed: ParsedChat, route: RouteDecision, x: Exchange) -> _Lines:
        return _Lines(route, x, parsed.context)

    def whole(self, parsed: ParsedChat, route: RouteDecision, x: Exchange, answer: Answer) -> dict[str, Any]:
        """A non-streamed answer: the last line, holding the whole text, thinking and tool calls."""
        assert answer.finish is not None
        lines = _Lines(route, x, parsed.context)
        calls = [_whole_call(call) for call in answer.tool_calls]
        whole = lines.final(answer.finish)
        text = "".join(answer.text)
        if parsed.context == "message":
            part = whole["message"] = {"role": "assistant", "content": text}
        else:
            part = whole
            whole["response"] = text
        if answer.reasoning:
            part["thinking"] = "".join(answer.reasoning)
        if calls:
            part["tool_calls"] = calls
        return whole


_OLLAMA = _OllamaCodec()
