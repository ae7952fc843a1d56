"""The router's own types: what a caller asks, what the router decides, what it can describe.

The engine and the routing policy speak only these; the servicer and the clients
translate them to and from ``router_pb2`` at the edge (proto.py). Decisions and
descriptions keep the proto's field names, so that translation is one line each.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CandidateRequest",
    "CandidateScore",
    "ChatMessage",
    "Decision",
    "Description",
    "ModelMapping",
    "RouteQuery",
    "ScorerDescription",
    "ShadowStats",
    "Timings",
]


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str


@dataclass(frozen=True)
class CandidateRequest:
    """A model the caller may be routed to; unset fields come from ``routing.models``."""

    model: str
    scorer_model: str = ""
    cost: float | None = None


@dataclass(frozen=True)
class RouteQuery:
    """One routing question: a prompt or a chat (exactly one, else the policy says which is missing)."""

    prompt: str | None = None
    messages: tuple[ChatMessage, ...] | None = None
    threshold: float | None = None  # wins over strong_share, as the proto's oneof allows only one
    strong_share: float | None = None
    candidates: tuple[CandidateRequest, ...] = ()
    scorer: str = ""
    caller: str = ""  # whose live-share window: the router caller, and the name it asks for ("" for none)
    strong_spent: bool = False  # the asking service's strong budget for this caller is spent: route weak
    preview: bool = False  # decide only: no live window, shadow, budget taken or decision metric
    tools: int = 0  # tool definitions the request carries (RequestShape; the background-task detector reads it)
    max_tokens: int = 0  # the output limit it asks for; 0: none


@dataclass(frozen=True)
class Timings:
    """Milliseconds of the batch a request rode in (zero for embed and score on a cache hit)."""

    embed_ms: float = 0.0
    score_ms: float = 0.0
    total_ms: float = 0.0


@dataclass(frozen=True)
class CandidateScore:
    model: str
    scorer_model: str
    cost: float
    strongest_win_rate: float


@dataclass(frozen=True)
class Decision:
    model: str
    score: float
    threshold: float
    routed_strong: bool
    scorer_name: str
    scorer_version: str
    timings: Timings
    embedding_cached: bool
    candidates: tuple[CandidateScore, ...] = ()  # only when the caller gave candidates
    budget_limited: bool = False  # routed weak because the strong-call budget was spent
    rule: str = ""  # the rule that decided (the prompt was not scored)


@dataclass(frozen=True)
class ShadowStats:
    samples: int = 0
    agreement: float = float("nan")  # share of compared routes with the same strong/weak choice
    score_correlation: float = float("nan")  # Pearson, of the two strong win rates


@dataclass(frozen=True)
class ScorerDescription:
    name: str
    version: str
    models: tuple[str, ...]
    strong_model: str
    weak_model: str
    embedder: str
    embedding_dim: int
    thresholds: dict[str, float]  # strong share in percent -> calibrated threshold
    live_thresholds: dict[str, float]  # the same shares on recent traffic (empty until warmed up)
    live_samples: int  # recent prompts the live thresholds come from
    path: str = ""
    shadow_of: str = ""  # a shadow scorer: the serving scorer it is compared with
    shadow: ShadowStats | None = None


@dataclass(frozen=True)
class ModelMapping:
    model: str
    scorer_model: str
    cost: float


@dataclass(frozen=True)
class Description:
    default_scorer: str
    scorers: tuple[ScorerDescription, ...]
    models: tuple[ModelMapping, ...]
    strong_model: str
    weak_model: str
    default_threshold: float
    embedder_backend: str
    warnings: tuple[str, ...] = ()  # a scorer trained for another pair than routing uses
