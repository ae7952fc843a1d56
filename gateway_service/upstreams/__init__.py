"""LLM upstreams behind one small interface: stream a chat as deltas, then a finish."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from ..config import UpstreamSettings

__all__ = ["ChatParams", "Delta", "Finish", "Message", "Upstream", "Usage", "open_upstream"]


@dataclass(frozen=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True)
class ChatParams:
    messages: tuple[Message, ...]
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Delta:
    text: str


@dataclass(frozen=True)
class Finish:
    reason: str
    usage: Usage | None  # None: the upstream sent no usage (llama.cpp's server, for one)


class Upstream(Protocol):
    name: str
    url: str

    def stream(self, model: str, params: ChatParams) -> AsyncIterator[Delta | Finish]:
        """Deltas, then exactly one Finish; raises a GatewayError on failure."""
        ...

    async def aclose(self) -> None: ...


def open_upstream(settings: UpstreamSettings, tracing: Any | None = None) -> Upstream:
    if settings.provider == "ollama":
        from .ollama import OllamaUpstream

        upstream: Any = OllamaUpstream(settings)
    else:
        from .openai import OpenAIUpstream

        upstream = OpenAIUpstream(settings)
    if tracing is not None:
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        HTTPXClientInstrumentor.instrument_client(upstream._client, tracer_provider=tracing)
    return upstream
