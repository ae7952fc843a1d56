"""LLM upstreams behind one small interface: stream a chat as deltas, then a finish."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, Protocol

from service_core.redact import Redactor

from ..config import UpstreamSettings
from ..domain import ChatParams, Delta, Finish

__all__ = ["Upstream", "open_upstream"]


class Upstream(Protocol):
    name: str
    url: str

    def stream(self, model: str, params: ChatParams) -> AsyncGenerator[Delta | Finish, None]:
        """Deltas, then exactly one Finish; raises a GatewayError on failure. ``aclose()`` ends the request."""
        ...

    async def aclose(self) -> None: ...


def open_upstream(settings: UpstreamSettings, tracing: Any | None = None, redact: Redactor | None = None) -> Upstream:
    """One pooled client for ``settings``; ``tracing``: an OpenTelemetry TracerProvider, or None;
    ``redact``: what to strip from upstream text (default: this upstream's own key)."""
    from .http import HttpUpstream

    upstream: HttpUpstream
    if settings.provider == "ollama":
        from .ollama import OllamaUpstream

        upstream = OllamaUpstream(settings, redact)
    else:
        from .openai import OpenAIUpstream

        upstream = OpenAIUpstream(settings, redact)
    if tracing is not None:
        upstream.instrument(tracing)
    return upstream
