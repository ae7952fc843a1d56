"""The gateway's own types: a chat request, its stream of events, and how its model was chosen.

HTTP and gRPC handlers translate to and from these; the chat core, the
dispatcher and the upstreams see nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ChatParams", "Delta", "Embedded", "Finish", "Message", "ModelSpec", "RouteDecision", "ToolCall", "ToolCallDelta", "Usage",
]


@dataclass(frozen=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True)
class ChatParams:
    """What the gateway reads (``messages`` as text, for routing and limits) and what it passes on.

    ``raw_messages``: the messages as the client sent them (tool calls, content parts), for
    OpenAI-compatible upstreams; ``extra``: request fields the gateway does not interpret
    (tools, response_format, logprobs...), passed on to OpenAI-compatible upstreams unchanged."""

    messages: tuple[Message, ...]
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    raw_messages: tuple[dict[str, Any], ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def needs(self) -> frozenset[str]:
        """The capabilities a model must have to take this request: vision, tools, json_schema."""
        needed = set()
        if self.extra.get("tools"):
            needed.add("tools")
        response_format = self.extra.get("response_format")
        if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
            needed.add("json_schema")
        for message in self.raw_messages:
            content = message.get("content")
            if isinstance(content, list) and any(isinstance(p, dict) and p.get("type") == "image_url" for p in content):
                needed.add("vision")
                break
        return frozenset(needed)


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

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
class ToolCall:
    """A whole tool call: its arguments are JSON text, as OpenAI carries them."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Delta:
    text: str
    tool_calls: tuple[ToolCallDelta, ...] = ()
    reasoning: str = ""  # reasoning text (OpenAI-compatible servers' reasoning_content)


@dataclass(frozen=True)
class Finish:
    reason: str
    usage: Usage | None  # None: the upstream sent no usage (llama.cpp's server, for one)


@dataclass(frozen=True)
class ModelSpec:
    """What the request's ``model`` means: a concrete model, or a routing policy."""

    name: str
    concrete: bool
    threshold: float | None = None
    strong_share: float | None = None
    scorer: str = ""  # one of the router's scorers (POST /v1/route's "scorer"); empty: its default


@dataclass(frozen=True)
class RouteDecision:
    """Which model answers and why: from the router, fail-open, a concrete request, or a fallback."""

    model: str
    routed: bool = False  # the router decided (not a concrete model, not failed open)
    score: float = 0.0
    threshold: float = 0.0
    degraded: bool = False  # the router was down or slow: the default model answers
    fallback: bool = False  # the chosen model failed before its first token
    reason: str = ""
    budget_limited: bool = False  # the router routed weak: its strong-call budget was spent
    routed_strong: bool = False
    scorer: str = ""  # the router's scorer and its version (for capture)
    scorer_version: str = ""
    rerouted_for: str = ""  # the router's choice lacked these capabilities (comma-separated): another model answers
    rule: str = ""  # the router's rule that decided (the prompt was not scored), or the gateway's sticky turn
    budget_unenforced: bool = False  # the caller's limits could not be checked (Redis unavailable): served anyway


@dataclass(frozen=True)
class Embedded:
    """An embeddings answer: one vector per input, in order, and the upstream's token count if it gave one."""

    vectors: list[list[float]]
    prompt_tokens: int | None


@dataclass(frozen=True)
class HostState:
    """One upstream host as this gateway process sees it now (GET /v1/router, the routing page)."""

    upstream: str
    url: str
    up: bool
    back_in_s: float  # ejected: seconds until it is tried again
    in_flight: int
    last_error: str


@dataclass(frozen=True)
class ScorerView:
    """One of the router's scorers, as Describe tells it: thresholds by share (percent), live ones, shadow figures."""

    name: str
    version: str
    role: str  # serving or shadow
    shadow_of: str
    thresholds: dict[str, float]
    live_thresholds: dict[str, float]
    live_samples: int
    shadow_samples: int
    shadow_agreement: float
    shadow_correlation: float


@dataclass(frozen=True)
class RouterView:
    """What the router serves now (its Describe), for operators; ``error`` set when it did not answer."""

    address: str
    error: str = ""
    default_scorer: str = ""
    strong_model: str = ""
    weak_model: str = ""
    default_threshold: float = 0.0
    embedder: str = ""
    scorers: tuple[ScorerView, ...] = ()
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class RecentShare:
    """Of the last ``window`` routed completions this process served (for one caller, or all): how many went strong."""

    window: int
    routed: int
    strong: int

    @property
    def strong_share(self) -> float | None:
        return self.strong / self.routed if self.routed else None


@dataclass(frozen=True)
class RoutingStatus:
    """GET /v1/router and the routing page: what the router serves, what the caller asked and got, the hosts."""

    router: RouterView
    caller: str
    policy: str
    strong_share_asked: float | None  # the caller's policy; None: the model's alias or the router's default decides
    strong_calls: int | None  # the caller's strong-call budget a window, if any
    models: tuple[str, ...]  # what the router may choose, with an upstream serving each
    recent_caller: RecentShare
    recent_all: RecentShare
    hosts: tuple[HostState, ...] | None  # admin callers only (they name internal addresses)
