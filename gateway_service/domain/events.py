"""What an upstream's answer is made of, whichever upstream kind sent it: deltas, then one finish.

Each upstream decoder normalises its own wire into these (finish reasons included), so a client
API renders one vocabulary, never an upstream's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Delta", "Finish", "FinishReason", "ToolCallDelta", "Usage", "finish_reason"]

FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """One streamed piece of a tool call, as OpenAI streams them: ``index`` says which call; the id and the
    name come once, the arguments (JSON text) in pieces. Upstreams build these from validated fields only."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class Delta:
    text: str
    tool_calls: tuple[ToolCallDelta, ...] = ()
    reasoning: str = ""  # reasoning text (OpenAI-compatible servers' reasoning_content, Ollama's thinking)
    signature: str = ""  # the reasoning's signature, where the upstream signs it (Anthropic)


@dataclass(frozen=True)
class Finish:
    reason: FinishReason
    usage: Usage | None  # None: the upstream sent no usage (llama.cpp's server, for one)
    stop_sequence: str | None = None  # which of the request's stop sequences ended it, where the upstream says


_REASONS: dict[str, FinishReason] = {
    "stop": "stop", "length": "length", "tool_calls": "tool_calls", "content_filter": "content_filter",
    "function_call": "tool_calls", "end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
    "tool_use": "tool_calls", "refusal": "content_filter", "pause_turn": "stop", "load": "stop", "unload": "stop",
}


def finish_reason(given: str) -> FinishReason:
    """An upstream's finish reason in the gateway's words (an unknown one reads as a plain stop)."""
    return _REASONS.get(given, "stop")
