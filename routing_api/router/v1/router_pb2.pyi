from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ChatMessage(_message.Message):
    __slots__ = ("role", "content")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class Chat(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[ChatMessage]
    def __init__(self, messages: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ...) -> None: ...

class Candidate(_message.Message):
    __slots__ = ("model", "cost", "scorer_model")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    SCORER_MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    cost: float
    scorer_model: str
    def __init__(self, model: _Optional[str] = ..., cost: _Optional[float] = ..., scorer_model: _Optional[str] = ...) -> None: ...

class RouteRequest(_message.Message):
    __slots__ = ("prompt", "chat", "threshold", "strong_share", "candidates", "scorer", "caller", "strong_budget_spent", "preview", "shape")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    CHAT_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    STRONG_SHARE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    SCORER_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    STRONG_BUDGET_SPENT_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    chat: Chat
    threshold: float
    strong_share: float
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    scorer: str
    caller: str
    strong_budget_spent: bool
    preview: bool
    shape: RequestShape
    def __init__(self, prompt: _Optional[str] = ..., chat: _Optional[_Union[Chat, _Mapping]] = ..., threshold: _Optional[float] = ..., strong_share: _Optional[float] = ..., candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ..., scorer: _Optional[str] = ..., caller: _Optional[str] = ..., strong_budget_spent: _Optional[bool] = ..., preview: _Optional[bool] = ..., shape: _Optional[_Union[RequestShape, _Mapping]] = ...) -> None: ...

class RequestShape(_message.Message):
    __slots__ = ("tools", "max_tokens")
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    tools: int
    max_tokens: int
    def __init__(self, tools: _Optional[int] = ..., max_tokens: _Optional[int] = ...) -> None: ...

class CandidateScore(_message.Message):
    __slots__ = ("model", "scorer_model", "cost", "strongest_win_rate")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SCORER_MODEL_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    STRONGEST_WIN_RATE_FIELD_NUMBER: _ClassVar[int]
    model: str
    scorer_model: str
    cost: float
    strongest_win_rate: float
    def __init__(self, model: _Optional[str] = ..., scorer_model: _Optional[str] = ..., cost: _Optional[float] = ..., strongest_win_rate: _Optional[float] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("embed_ms", "score_ms", "total_ms")
    EMBED_MS_FIELD_NUMBER: _ClassVar[int]
    SCORE_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    embed_ms: float
    score_ms: float
    total_ms: float
    def __init__(self, embed_ms: _Optional[float] = ..., score_ms: _Optional[float] = ..., total_ms: _Optional[float] = ...) -> None: ...

class RouteResponse(_message.Message):
    __slots__ = ("model", "score", "threshold", "routed_strong", "scorer_name", "scorer_version", "timings", "embedding_cached", "candidates", "budget_limited", "rule")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    ROUTED_STRONG_FIELD_NUMBER: _ClassVar[int]
    SCORER_NAME_FIELD_NUMBER: _ClassVar[int]
    SCORER_VERSION_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_CACHED_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    BUDGET_LIMITED_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    model: str
    score: float
    threshold: float
    routed_strong: bool
    scorer_name: str
    scorer_version: str
    timings: Timings
    embedding_cached: bool
    candidates: _containers.RepeatedCompositeFieldContainer[CandidateScore]
    budget_limited: bool
    rule: str
    def __init__(self, model: _Optional[str] = ..., score: _Optional[float] = ..., threshold: _Optional[float] = ..., routed_strong: _Optional[bool] = ..., scorer_name: _Optional[str] = ..., scorer_version: _Optional[str] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., embedding_cached: _Optional[bool] = ..., candidates: _Optional[_Iterable[_Union[CandidateScore, _Mapping]]] = ..., budget_limited: _Optional[bool] = ..., rule: _Optional[str] = ...) -> None: ...

class RouteBatchRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[RouteRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[RouteRequest, _Mapping]]] = ...) -> None: ...

class RouteBatchResponse(_message.Message):
    __slots__ = ("responses",)
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    responses: _containers.RepeatedCompositeFieldContainer[RouteResponse]
    def __init__(self, responses: _Optional[_Iterable[_Union[RouteResponse, _Mapping]]] = ...) -> None: ...

class DescribeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ScorerInfo(_message.Message):
    __slots__ = ("name", "version", "models", "strong_model", "weak_model", "embedder", "embedding_dim", "thresholds", "live_thresholds", "live_samples", "path", "shadow_of", "shadow")
    class ThresholdsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class LiveThresholdsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    STRONG_MODEL_FIELD_NUMBER: _ClassVar[int]
    WEAK_MODEL_FIELD_NUMBER: _ClassVar[int]
    EMBEDDER_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_DIM_FIELD_NUMBER: _ClassVar[int]
    THRESHOLDS_FIELD_NUMBER: _ClassVar[int]
    LIVE_THRESHOLDS_FIELD_NUMBER: _ClassVar[int]
    LIVE_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    SHADOW_OF_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    models: _containers.RepeatedScalarFieldContainer[str]
    strong_model: str
    weak_model: str
    embedder: str
    embedding_dim: int
    thresholds: _containers.ScalarMap[str, float]
    live_thresholds: _containers.ScalarMap[str, float]
    live_samples: int
    path: str
    shadow_of: str
    shadow: ShadowStats
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., models: _Optional[_Iterable[str]] = ..., strong_model: _Optional[str] = ..., weak_model: _Optional[str] = ..., embedder: _Optional[str] = ..., embedding_dim: _Optional[int] = ..., thresholds: _Optional[_Mapping[str, float]] = ..., live_thresholds: _Optional[_Mapping[str, float]] = ..., live_samples: _Optional[int] = ..., path: _Optional[str] = ..., shadow_of: _Optional[str] = ..., shadow: _Optional[_Union[ShadowStats, _Mapping]] = ...) -> None: ...

class ShadowStats(_message.Message):
    __slots__ = ("samples", "agreement", "score_correlation")
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    SCORE_CORRELATION_FIELD_NUMBER: _ClassVar[int]
    samples: int
    agreement: float
    score_correlation: float
    def __init__(self, samples: _Optional[int] = ..., agreement: _Optional[float] = ..., score_correlation: _Optional[float] = ...) -> None: ...

class ModelMapping(_message.Message):
    __slots__ = ("model", "scorer_model", "cost")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SCORER_MODEL_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    model: str
    scorer_model: str
    cost: float
    def __init__(self, model: _Optional[str] = ..., scorer_model: _Optional[str] = ..., cost: _Optional[float] = ...) -> None: ...

class DescribeResponse(_message.Message):
    __slots__ = ("default_scorer", "scorers", "models", "strong_model", "weak_model", "default_threshold", "embedder_backend", "warnings")
    DEFAULT_SCORER_FIELD_NUMBER: _ClassVar[int]
    SCORERS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    STRONG_MODEL_FIELD_NUMBER: _ClassVar[int]
    WEAK_MODEL_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    EMBEDDER_BACKEND_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    default_scorer: str
    scorers: _containers.RepeatedCompositeFieldContainer[ScorerInfo]
    models: _containers.RepeatedCompositeFieldContainer[ModelMapping]
    strong_model: str
    weak_model: str
    default_threshold: float
    embedder_backend: str
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, default_scorer: _Optional[str] = ..., scorers: _Optional[_Iterable[_Union[ScorerInfo, _Mapping]]] = ..., models: _Optional[_Iterable[_Union[ModelMapping, _Mapping]]] = ..., strong_model: _Optional[str] = ..., weak_model: _Optional[str] = ..., default_threshold: _Optional[float] = ..., embedder_backend: _Optional[str] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class ReloadScorersRequest(_message.Message):
    __slots__ = ("paths",)
    class PathsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PATHS_FIELD_NUMBER: _ClassVar[int]
    paths: _containers.ScalarMap[str, str]
    def __init__(self, paths: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ReloadScorersResponse(_message.Message):
    __slots__ = ("serving", "swapped", "warnings")
    SERVING_FIELD_NUMBER: _ClassVar[int]
    SWAPPED_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    serving: DescribeResponse
    swapped: _containers.RepeatedScalarFieldContainer[str]
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, serving: _Optional[_Union[DescribeResponse, _Mapping]] = ..., swapped: _Optional[_Iterable[str]] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...
