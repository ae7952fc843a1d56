"""LLM upstreams behind one small interface: stream a chat as deltas, then a finish."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from importlib import import_module
from typing import TYPE_CHECKING, Any, Protocol

from service_core.redact import Redactor

from ..config import UpstreamSettings
from ..domain import ChatParams, Delta, Embedded, Finish, HostState
from ..metrics import GatewayMetrics

if TYPE_CHECKING:
    from .http import HttpUpstream

__all__ = ["PROVIDERS", "Upstream", "open_upstream"]

# Each upstream kind (a config's ``provider``): its module, imported when an upstream of that kind is opened.
PROVIDERS = {
    "ollama": (".ollama", "OllamaUpstream"),
    "openai": (".openai", "OpenAIUpstream"),
    "anthropic": (".anthropic", "AnthropicUpstream"),
}


class Upstream(Protocol):
    name: str

    def stream(self, model: str, params: ChatParams) -> AsyncGenerator[Delta | Finish, None]:
        """Deltas, then exactly one Finish; raises a GatewayError on failure. ``aclose()`` ends the request."""
        ...

    def adaptations(self, params: ChatParams) -> tuple[str, ...]:
        """What this upstream kind does not take as the request asks (emulated, dropped), for the access line."""
        ...

    async def embed(self, model: str, inputs: list[str], options: dict[str, Any]) -> Embedded:
        """One vector per input; ``options``: dimensions, user, and Ollama's truncate / keep_alive / options."""
        ...

    def hosts(self) -> list[HostState]:
        """Each host's state now (GET /v1/router)."""
        ...

    def windows(self) -> dict[str, int]:
        """The context window each model is served with, as the upstream itself reports it (Ollama's /api/ps and
        /api/show); empty where it does not."""
        ...

    def start(self) -> None:
        """Start background work (health checks); called once the event loop runs."""
        ...

    async def aclose(self) -> None: ...


def open_upstream(
    settings: UpstreamSettings,
    tracing: Any | None = None,
    redact: Redactor | None = None,
    metrics: GatewayMetrics | None = None,
    answer_limit: int = 64 * 2**20,
) -> Upstream:
    """One pooled client over ``settings``' hosts; ``tracing``: an OpenTelemetry TracerProvider, or None;
    ``redact``: what to strip from upstream text (default: this upstream's own key); ``metrics``: per-host figures;
    ``answer_limit``: the most bytes of a whole answer (embeddings) read."""
    module, name = PROVIDERS[settings.provider]
    kind: type[HttpUpstream] = getattr(import_module(module, __name__), name)
    upstream = kind(settings, redact, metrics, answer_limit)
    if tracing is not None:
        upstream.instrument(tracing)
    return upstream
