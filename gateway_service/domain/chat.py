"""A chat request as the gateway understands it, whichever client API sent it.

Every client API (OpenAI chat, OpenAI Responses, Anthropic Messages, Ollama, gRPC) is parsed into
these at its codec, and every upstream kind renders them into its own wire format: N APIs and M
upstreams meet here, never each other. A message is a role and typed parts; the text a rule, the
router or a limit reads is derived from the parts, never kept beside them.

What only one upstream kind can use travels in ``ChatParams.passthrough`` under that kind's name
(``{"ollama": {"options": {...}}}``, ``{"openai": {"logprobs": true}}``); an upstream reads its own
namespace and nothing else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

__all__ = [
    "ChatParams",
    "Image",
    "Message",
    "Opaque",
    "OutputFormat",
    "Part",
    "Reasoning",
    "ReasoningAsk",
    "Text",
    "Tool",
    "ToolCall",
    "ToolChoice",
    "ToolResult",
]

OUTPUT_DEFAULT, OUTPUT_MAX = 1024, 4096  # ChatParams.output_expected

Role = Literal["system", "developer", "user", "assistant", "tool"]
ROLES: frozenset[str] = frozenset({"system", "developer", "user", "assistant", "tool"})


@dataclass(frozen=True, slots=True)
class Text:
    text: str
    cache: bool = False  # the client marked a cache breakpoint here (Anthropic's cache_control)


@dataclass(frozen=True, slots=True)
class Image:
    """An image as base64 bytes with their media type, or as a URL (which not every upstream can fetch)."""

    media_type: str = ""
    data: str = ""
    url: str = ""
    detail: str | None = None  # OpenAI's low / high / auto

    def data_url(self) -> str:
        return self.url or f"data:{self.media_type};base64,{self.data}"


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A whole tool call the model made: its arguments are JSON text, as OpenAI carries them."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What the client's tool answered to call ``call_id``; ``is_error``: the tool failed (Anthropic's flag)."""

    call_id: str
    content: tuple[Text | Image, ...]
    is_error: bool = False
    name: str = ""  # the tool's name, where the client said it (Ollama's tool_name, OpenAI's name)

    @property
    def text(self) -> str:
        return "".join(part.text for part in self.content if isinstance(part, Text))


@dataclass(frozen=True, slots=True)
class Reasoning:
    """An earlier answer's reasoning, sent back. ``signature`` and ``redacted`` (encrypted reasoning) belong to
    the model named by ``origin`` alone: they are stripped when the conversation goes to another model."""

    text: str = ""
    signature: str = ""
    redacted: str = ""
    origin: str = ""  # "anthropic", "openai": the provider whose signature this is


@dataclass(frozen=True, slots=True)
class Opaque:
    """A content part only one client API's upstream kind understands (OpenAI's input_audio, file), as sent."""

    kind: str  # the upstream kind that may take it: "openai"
    data: dict[str, Any]

    @property
    def type(self) -> str:
        return str(self.data.get("type", "?"))


Part = Text | Image | ToolCall | ToolResult | Reasoning | Opaque


@dataclass(frozen=True)
class Message:
    role: str
    parts: tuple[Part, ...] = ()
    name: str = ""  # OpenAI's participant name

    @classmethod
    def of(cls, role: str, text: str) -> Message:
        return cls(role, (Text(text),) if text else ())

    @cached_property
    def content(self) -> str:
        """The message's text (a tool message: its result's text): what rules, the router and the limits read."""
        return "".join(
            part.text for part in self.parts if isinstance(part, Text | ToolResult)
        )

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        return tuple(part for part in self.parts if isinstance(part, ToolCall))

    @property
    def images(self) -> tuple[Image, ...]:
        found: list[Image] = []
        for part in self.parts:
            if isinstance(part, Image):
                found.append(part)
            elif isinstance(part, ToolResult):
                found.extend(p for p in part.content if isinstance(p, Image))
        return tuple(found)


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """``auto``: the model decides; ``none``: no tool; ``required``: some tool; ``tool``: the tool ``name``."""

    mode: Literal["auto", "none", "required", "tool"] = "auto"
    name: str = ""
    parallel: bool | None = None  # may the model call several tools at once (None: the upstream's default)


@dataclass(frozen=True, slots=True)
class OutputFormat:
    """Structured output: any JSON object, or one that fits ``schema``."""

    kind: Literal["json", "json_schema"]
    schema: dict[str, Any] | None = None
    name: str = "output"
    strict: bool | None = None


@dataclass(frozen=True, slots=True)
class ReasoningAsk:
    """What the client asked of the model's reasoning: on or off, an effort (low / medium / high ...), a budget."""

    enabled: bool | None = None
    effort: str | None = None
    budget_tokens: int | None = None


@dataclass(frozen=True)
class ChatParams:
    messages: tuple[Message, ...]
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None
    output: OutputFormat | None = None
    reasoning: ReasoningAsk | None = None
    metadata: dict[str, Any] = field(default_factory=dict)  # the client's own tags (gateway rules read them)
    passthrough: dict[str, dict[str, Any]] = field(default_factory=dict)  # upstream kind -> fields only it reads
    ignored: tuple[str, ...] = ()  # fields the client API took and nothing uses (said in the access line)
    context_window: int | None = None  # the window the chosen model is served with (set by the dispatcher)
    session: str = ""  # the client's own session id where its API carries one (Codex: prompt_cache_key)

    def needs(self) -> frozenset[str]:
        """The capabilities a model must have to take this request: vision, tools, json_schema."""
        needed = set()
        if self.tools and (self.tool_choice is None or self.tool_choice.mode != "none"):
            needed.add("tools")
        if self.output is not None and self.output.kind == "json_schema":
            needed.add("json_schema")
        if any(m.images for m in self.messages):
            needed.add("vision")
        return frozenset(needed)

    def prompt_chars(self) -> int:
        """The characters the prompt holds: its messages' text, the tool calls' names and arguments, the tools."""
        chars = sum(len(m.content) + sum(len(c.name) + len(c.arguments) for c in m.tool_calls) for m in self.messages)
        return chars + sum(len(t.name) + len(t.description) + len(json.dumps(t.parameters)) for t in self.tools)

    def output_expected(self) -> int:
        """The output tokens to plan for (a context window, a dollar reservation): its max_tokens, at most
        OUTPUT_MAX (agents ask for 128k they will not use), OUTPUT_DEFAULT where it set none."""
        return min(self.max_tokens or OUTPUT_DEFAULT, OUTPUT_MAX)

    def own(self, kind: str) -> dict[str, Any]:
        """The fields only upstreams of ``kind`` read."""
        return self.passthrough.get(kind, {})
