"""How a request's model was chosen, and what operators see of the router and the hosts."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Embedded", "HostState", "ModelSpec", "RecentShare", "RouteDecision", "RouterView", "RoutingStatus", "ScorerView",
]


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
    budget_limited: bool = False  # routed weak because a strong budget (the router's or the caller's) was spent
    routed_strong: bool = False  # the router's own answer was its strong model
    strong: bool = False  # the model that answers is the strong one, however it was decided: what budgets count
    scorer: str = ""  # the router's scorer and its version (for capture)
    scorer_version: str = ""
    rerouted_for: str = ""  # the router's choice lacked these capabilities (comma-separated): another model answers
    rule: str = ""  # the router's rule that decided (the prompt was not scored), or the gateway's sticky turn
    budget_unenforced: bool = False  # the caller's limits could not be checked (Redis unavailable): served anyway
    routed_on: str = ""  # the user's words the router was asked about (routing/words.py), for the capture record
    set_aside: tuple[str, ...] = ()  # the client boilerplate set aside before routing (access line, capture)


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
