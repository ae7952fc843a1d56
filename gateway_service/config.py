"""The gateway's settings: one validated, frozen object built once at start.

Sources, highest first: keyword arguments (tests), ``GATEWAY_*`` environment
variables (nested with ``__``), the TOML file given by ``--config`` or
``GATEWAY_CONFIG``, then the defaults. Each upstream has its own credentials:
no ambient ``OPENAI_*`` variable is read unless an upstream's ``api_key_env``
names it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from service_core.callers import BudgetSettings, CallerSettings, check_callers, read_keys_file
from service_core.quota import RedisSettings
from service_core.redact import Redactor
from service_core.settings import (
    GrpcClientSettings,
    Section,
    TlsServerSettings,
    TomlSettings,
    load_toml_settings,
    secret_value,
)
from service_core.tracing import TracingSettings

__all__ = [
    "AuthSettings",
    "CallerPolicySettings",
    "CaptureSettings",
    "ConversationSettings",
    "GatewaySettings",
    "LimitSettings",
    "ModelAliasSettings",
    "ModelSettings",
    "PolicySettings",
    "PriceSettings",
    "RouterClientSettings",
    "ServerSettings",
    "TurnSettings",
    "UpstreamSettings",
    "load_settings",
    "metrics_token",
    "secrets_of",
]


class ServerSettings(TlsServerSettings):
    host: str = "127.0.0.1"
    http_port: int = Field(8000, ge=0, le=65535, description="OpenAI-compatible HTTP; 0 picks a free port")
    grpc_port: int = Field(50052, ge=0, le=65535, description="gateway.v1.GatewayService; 0 picks a free port")
    grpc_host: str | None = Field(None, description="the gRPC listener's address, when it is not host's")
    grace_s: float = Field(30.0, ge=0, description="how long in-flight streams may finish after SIGTERM")
    shutdown_delay_s: float = Field(0.0, ge=0, description="time between failing health checks and closing listeners")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    header_timeout_s: float = Field(10.0, gt=0, description="a request's headers must arrive within this; then 408")
    body_timeout_s: float = Field(30.0, gt=0, description="a request's body must arrive within this; then 408")
    max_connections: int = Field(4096, ge=1, description="HTTP connections and requests at once; more: 503")
    workers: int = Field(
        0, ge=0, description="`serve` processes sharing the ports (SO_REUSEPORT); 0: one per CPU this process may use "
        "(affinity and cgroup quota: a container's limit). Limits are split among them",
    )
    metrics_token: SecretStr | None = Field(
        None, description="GET /metrics answers only 'Authorization: Bearer <this>' or an admin caller's key (with "
        "[[callers]] set it answers admin keys only, even without this): it names every caller, its spend, the hosts",
    )
    metrics_token_env: str | None = Field(None, description="name of the env variable holding metrics_token")
    worker_hang_s: float = Field(
        10.0, gt=0, description="under `serve --workers`, a worker with no heartbeat for this long (a stuck event "
        "loop, a stopped process) is killed and restarted",
    )


def metrics_token(server: ServerSettings) -> str | None:
    return secret_value(server.metrics_token, server.metrics_token_env)


class RouterClientSettings(GrpcClientSettings):
    """The router this gateway asks; past ``timeout_s`` it fails open to ``default_model``."""

    address: str = Field("127.0.0.1:50051", description="host:port of router.v1.RouterService")
    timeout_s: float = Field(0.5, gt=0, description="deadline of a Route call; past it the gateway fails open")


class LimitSettings(Section):
    """Every limit refuses with a clear error; nothing waits in an unbounded queue."""

    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="HTTP request bodies larger than this: 413")
    max_messages: int = Field(
        10_000, ge=1, description="messages of one request: an agent's session runs to thousands, bounded by "
        "max_body_bytes, not by its count"
    )
    max_prompt_chars: int = Field(1_000_000, ge=1, description="all message contents together")
    max_message_chars: int = Field(
        1_000_000, ge=1, description="any one message (a big tool result is one); the router is sent a bounded "
        "part of the user's words, never more than its own limits.max_prompt_chars"
    )
    max_content_parts: int = Field(
        20_000, ge=1, description="content parts (text, images, tool calls and results) in all messages together; "
        "counted before the body is validated, so a request of 150k parts costs milliseconds, not seconds"
    )
    max_images: int = Field(100, ge=0, description="images in all messages together (OpenAI image parts, Ollama images)")
    max_tools: int = Field(1000, ge=0, description="tool definitions in one request; counted before it is validated")
    max_extra_fields: int = Field(
        256, ge=1, description="fields of a request: an HTTP body's top level, or a gRPC request's extra"
    )
    max_upstream_answer_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="a whole upstream answer (embeddings); a larger one is a 502, "
        "read no further"
    )
    max_streams: int = Field(2048, ge=1, description="completions in flight at once; more: 429 / RESOURCE_EXHAUSTED")
    max_streams_per_key: int = Field(
        256, ge=1, description="completions in flight per client API key (with auth.api_keys set; else max_streams only)"
    )


class AuthSettings(Section):
    """Client API keys without a name (one caller, ``default``); named callers are [[callers]]. None configured
    (the default) means no auth, for local use."""

    api_keys: tuple[SecretStr, ...] = ()
    api_keys_file: Path | None = Field(None, description="one key a line; # starts a comment")

    def resolve_keys(self) -> tuple[str, ...]:
        keys = [k.get_secret_value() for k in self.api_keys]
        if self.api_keys_file is not None:
            keys.extend(read_keys_file(self.api_keys_file, "auth.api_keys_file"))
        return tuple(keys)


class CallerPolicySettings(BudgetSettings):
    """What callers following this policy may ask and spend. The policy named ``default`` applies to callers
    that name none (and to unnamed keys)."""

    name: str = Field(min_length=1, max_length=64)
    models: tuple[str, ...] = Field(
        ("*",), description="concrete models it may name (names or wildcards such as 'llama3.2:*'); [] for none"
    )
    strong_cost_usd: float | None = Field(
        None, ge=0, description="dollars of strong calls per budget_window_s (needs [[prices]]); past it, routed weak"
    )
    tokens_per_minute: int | None = Field(None, ge=1, description="prompt and completion tokens; past it: 429")


class PriceSettings(Section):
    """What a model costs, for spend and savings (gateway_spend_usd_total, GET /v1/spend, `gateway-service spend`)."""

    model: str = Field(min_length=1)
    input_per_million: float = Field(ge=0, description="dollars per million prompt tokens")
    output_per_million: float = Field(ge=0, description="dollars per million completion tokens")


class UpstreamSettings(Section):
    """One LLM service and the models it serves: one server (``base_url``) or several alike (``base_urls``).

    With several hosts, each request goes to the host with the fewest requests in
    flight among those that are up and list the model; a failure before the first
    token is retried on another host; a host that keeps failing is ejected for a
    back-off that doubles each time, and comes back after a successful health check
    or trial request."""

    name: str = Field(min_length=1)
    provider: Literal["ollama", "openai", "anthropic"]
    base_url: str | None = Field(
        None, min_length=1, description="ollama and anthropic: the server root; openai: ends in /v1"
    )
    base_urls: tuple[str, ...] = Field((), description="several hosts serving the same models (instead of base_url)")
    models: tuple[str, ...] = Field(min_length=1)
    api_key: SecretStr | None = None
    api_key_env: str | None = Field(None, description="name of the env variable holding the API key")
    connect_timeout_s: float = Field(5.0, gt=0)
    read_timeout_s: float = Field(120.0, gt=0, description="longest silence between two chunks")
    max_concurrency: int = Field(64, ge=1, description="requests in flight to each host")
    queue_timeout_s: float = Field(
        2.0, ge=0, description="longest wait for a free slot past max_concurrency; then 429 (or the fallback model)"
    )
    eject_after: int = Field(
        5, ge=1, description="failures in a row (connect, timeout, 429, 5xx, a broken stream) that eject a host"
    )
    eject_base_s: float = Field(2.0, gt=0, description="first ejection; doubles with each ejection in a row")
    eject_max_s: float = Field(60.0, gt=0, description="longest ejection")
    health_interval_s: float = Field(
        15.0, ge=0, description="how often each host's model list is fetched (Ollama /api/tags, OpenAI /models); 0: never"
    )
    url_named_as: str | None = Field(
        None, description="what errors call this upstream's URL setting, for tools that write this config from "
        "their own flags (routestack-routellm: --base-url); default upstreams[NAME].base_url",
    )

    @model_validator(mode="after")
    def _one_kind_of_url(self) -> UpstreamSettings:
        if (self.base_url is None) == (not self.base_urls):
            raise ValueError(f"upstream {self.name!r}: set base_url (one host) or base_urls (several), not both")
        if len(set(self.hosts)) != len(self.hosts):
            raise ValueError(f"upstream {self.name!r}: base_urls lists a URL twice")
        return self

    @property
    def hosts(self) -> tuple[str, ...]:
        """Each host's base URL, without a trailing slash."""
        urls = self.base_urls or ((self.base_url,) if self.base_url else ())
        return tuple(url.rstrip("/") for url in urls)

    @property
    def url_setting(self) -> str:
        return self.url_named_as or f"upstreams[{self.name}].{'base_urls' if self.base_urls else 'base_url'}"

    def resolve_api_key(self) -> str | None:
        return secret_value(self.api_key, self.api_key_env)


class RuleSettings(Section):
    """A routed request that meets every condition given goes to ``model`` without asking the router: what only
    the gateway sees (the request's max_tokens, a header, OpenAI ``metadata``). Prompt rules live in the router."""

    name: str = Field(min_length=1, max_length=64)
    model: str = Field(min_length=1, description="a served model")
    max_tokens_below: int | None = Field(None, ge=1, description="max_tokens (Ollama: num_predict) set and below this")
    header: str | None = Field(None, description="'name' (present) or 'name: value' (equal, case-insensitive)")
    metadata: str | None = Field(None, description="'key' (present) or 'key=value' in the request's metadata")

    @model_validator(mode="after")
    def _some_condition(self) -> RuleSettings:
        if self.max_tokens_below is None and self.header is None and self.metadata is None:
            raise ValueError(f"rule {self.name!r}: give max_tokens_below, header or metadata (or several)")
        return self


class PolicySettings(Section):
    """A friendly router pseudo-model, e.g. ``router-mf-50`` for a 50% strong share."""

    name: str = Field(min_length=1)
    strong_share: float | None = Field(None, ge=0, le=1)
    threshold: float | None = Field(None, ge=0, le=1)
    description: str = ""

    @model_validator(mode="after")
    def _one_of(self) -> PolicySettings:
        if (self.strong_share is None) == (self.threshold is None):
            raise ValueError(f"policy {self.name!r}: set exactly one of strong_share or threshold")
        return self


class ModelAliasSettings(Section):
    """A model name clients send that this gateway does not serve (Claude Code's ``claude-opus-5-5``, whatever
    ``codex -m`` says), mapped to what answers it: ``router``, a policy alias, or a served model."""

    name: str = Field(min_length=1, description="a name, or a wildcard such as 'claude-*' (fnmatch)")
    model: str = Field(min_length=1, description="router, a [[policies]] name, router-mf-<threshold>, or a served model")


# Claude Code names its own models (claude-opus-*, claude-haiku-* for background tasks): routed by default.
DEFAULT_ALIASES = (ModelAliasSettings(name="claude-*", model="router"),)

ROUTELLM_SPEC = re.compile(r"^router-mf-(?P<threshold>[0-9]*\.?[0-9]+)$")

DEFAULT_POLICIES = (
    PolicySettings(name="router-mf-20", strong_share=0.2, description="router, about 20% strong calls"),
    PolicySettings(name="router-mf-50", strong_share=0.5, description="router, about 50% strong calls"),
    PolicySettings(name="router-mf-80", strong_share=0.8, description="router, about 80% strong calls"),
)

DEFAULT_UPSTREAMS = (
    UpstreamSettings(
        name="ollama", provider="ollama", base_url="http://localhost:11434", models=("llama3.1:8b", "llama3.2:1b")
    ),
)


Capability = Literal["vision", "tools", "json_schema"]


class ModelSettings(Section):
    """What the gateway knows of one served model: its window, what it can take, what it costs (one table; the older
    ``[capabilities]`` and ``[[prices]]`` are still read, this table winning where both name a model)."""

    context_window: int | None = Field(
        None, ge=256, description="tokens the model is served with (Ollama: sent as options.num_ctx on every request "
        "to it, so Ollama neither truncates at its 4k default nor reloads); a request that does not fit goes to a "
        "routable model that holds it, or is a 400; unset for an Ollama model: what Ollama reports for it",
    )
    capabilities: tuple[Capability, ...] | None = Field(
        None, description="what it can take: vision (image parts), tools, json_schema; unset: everything"
    )
    input_per_million: float | None = Field(None, ge=0, description="dollars per million prompt tokens")
    output_per_million: float | None = Field(None, ge=0, description="dollars per million completion tokens")

    @model_validator(mode="after")
    def _priced_whole(self) -> ModelSettings:
        if (self.input_per_million is None) != (self.output_per_million is None):
            raise ValueError("set both input_per_million and output_per_million, or neither")
        return self


class TurnSettings(Section):
    """A request that continues a turn (its last message is a tool result or an assistant prefix) goes to the
    model that started that turn, found by a hash of the conversation up to its last user message."""

    remember_s: float = Field(1800.0, ge=0, description="how long a turn's model is remembered; 0: never (route each)")
    max_turns: int = Field(100_000, ge=1, description="turns remembered at once (per process); the oldest go first")
    max_turns_per_caller: int = Field(
        10_000, ge=1, description="turns one caller may hold; its own oldest go first, never another caller's"
    )
    session: Literal["per_turn", "sticky"] = Field(
        "per_turn", description="sticky: a session's new user turn stays on the session's model unless its score is "
        "past the threshold by session_margin (a switch makes the other model re-read the whole prompt)",
    )
    session_margin: float = Field(0.1, ge=0, le=1, description="how far past the threshold a sticky session switches")


class ConversationSettings(Section):
    """Conversations the Responses API stores (``store``, ``previous_response_id``): in Redis, per caller."""

    ttl_s: float = Field(30 * 86400.0, gt=0, description="how long a stored conversation is kept (OpenAI keeps 30 days)")
    timeout_s: float = Field(1.0, gt=0, description="longest wait for Redis to read or write one")


class CaptureSettings(Section):
    """Opt-in: a sample of routed prompts and their route decisions, to label and retrain on (docs/scorers-and-learning.md)."""

    enabled: bool = False
    dir: Path = Field(Path("captures"), description="where the JSONL files go (created if missing)")
    rate: float = Field(0.1, ge=0, le=1, description="share of routed requests captured")
    completions: bool = Field(False, description="also store the answer's text (off: prompts and decisions only)")
    max_file_mb: float = Field(64.0, gt=0, description="a file is rotated (prompts.jsonl.1, .2, ...) past this size")
    max_files: int = Field(10, ge=1, description="rotated files kept; the oldest is deleted")
    file_name: str = Field(
        "prompts.jsonl", min_length=1, description="set per worker process by --workers (prompts.w1.jsonl, ...)"
    )


class GatewaySettings(TomlSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", env_nested_delimiter="__", frozen=True, extra="forbid")

    server: ServerSettings = ServerSettings()
    router: RouterClientSettings = RouterClientSettings()
    upstreams: tuple[UpstreamSettings, ...] = DEFAULT_UPSTREAMS
    replace_policies: bool = Field(
        False, description="[[policies]] replace the default router-mf-20/50/80 instead of joining them"
    )
    policies: tuple[PolicySettings, ...] = Field(
        DEFAULT_POLICIES, description="router pseudo-models; joined to the defaults (one of the same name wins) "
        "unless replace_policies",
    )
    model_aliases: tuple[ModelAliasSettings, ...] = Field(
        DEFAULT_ALIASES, description="model names clients send, mapped to a router policy or a served model"
    )
    rules: tuple[RuleSettings, ...] = Field((), description="routed requests decided here, before the router")
    auth: AuthSettings = AuthSettings()
    callers: tuple[CallerSettings, ...] = Field((), description="named API keys, each with an optional policy")
    caller_policies: tuple[CallerPolicySettings, ...] = Field(
        (), description="what callers may ask and spend; 'default' applies to callers that name none"
    )
    prices: tuple[PriceSettings, ...] = Field((), description="per model, for spend and the all-strong baseline")
    redis: RedisSettings = RedisSettings()
    limits: LimitSettings = LimitSettings()
    tracing: TracingSettings = TracingSettings()
    capture: CaptureSettings = CaptureSettings()
    turns: TurnSettings = TurnSettings()
    conversations: ConversationSettings = ConversationSettings()
    models: dict[str, ModelSettings] = Field(
        default_factory=dict, description='per served model: [models."llama3.1:8b"] context_window = 65536'
    )
    capabilities: dict[str, tuple[Capability, ...]] = Field(
        default_factory=dict,
        description="what a model can take: vision (image parts), tools, json_schema (structured output); a model "
        "not listed is assumed to take everything",
    )
    default_model: str = Field(
        "llama3.1:8b", min_length=1, description="answers when the router is down or slow (fail open)"
    )
    fallback_model: str | None = Field(
        "llama3.2:1b", description="answers when the chosen model's upstream fails before the first token"
    )

    @field_validator("policies", mode="after")
    @classmethod
    def _with_default_policies(cls, given: tuple[PolicySettings, ...], info: ValidationInfo) -> tuple[PolicySettings, ...]:
        """A config's [[policies]] join the defaults (a TOML example adding one must not take router-mf-50 away)."""
        if info.data.get("replace_policies"):
            return given
        named = {p.name for p in given}
        return (*(p for p in DEFAULT_POLICIES if p.name not in named), *given)

    def model_capabilities(self) -> dict[str, frozenset[str]]:
        """What each listed model can take: ``[models."<name>"] capabilities``, else ``[capabilities]``."""
        can: dict[str, frozenset[str]] = {model: frozenset(listed) for model, listed in self.capabilities.items()}
        can |= {model: frozenset(m.capabilities) for model, m in self.models.items() if m.capabilities is not None}
        return can

    def model_prices(self) -> dict[str, tuple[float, float]]:
        """Each priced model's dollars per million (prompt, completion) tokens: ``[models."<name>"]``, else
        ``[[prices]]``."""
        prices = {p.model: (p.input_per_million, p.output_per_million) for p in self.prices}
        prices |= {model: (m.input_per_million, m.output_per_million) for model, m in self.models.items()
                   if m.input_per_million is not None and m.output_per_million is not None}
        return prices

    @model_validator(mode="after")
    def _models_are_served(self) -> GatewaySettings:
        served: dict[str, str] = {}
        for upstream in self.upstreams:
            for model in upstream.models:
                if model in served:
                    raise ValueError(f"model {model!r} is listed by upstreams {served[model]!r} and {upstream.name!r}")
                served[model] = upstream.name
        required: tuple[tuple[str, str | None], ...] = (
            ("default_model", self.default_model), ("fallback_model", self.fallback_model)
        )
        for setting, wanted in required:
            if wanted is not None and wanted not in served:
                raise ValueError(f"{setting} {wanted!r} is not served by any upstream; add it to an upstream's models")
        for rule in self.rules:
            if rule.model not in served:
                raise ValueError(f"rules[{rule.name}].model {rule.model!r} is not served by any upstream")
        routers = {"router", *(p.name for p in self.policies)}
        for alias in self.model_aliases:
            if alias.model not in served and alias.model not in routers and not ROUTELLM_SPEC.match(alias.model):
                raise ValueError(
                    f"model_aliases[{alias.name}].model {alias.model!r} is neither a served model nor a router policy "
                    f"({', '.join(sorted(routers))})"
                )
        for model in self.models:
            if model not in served:
                raise ValueError(f"models: {model!r} is not served by any upstream; add it to an upstream's models")
        for model in self.capabilities:
            if model not in served:
                raise ValueError(f"capabilities: {model!r} is not served by any upstream; add it to an upstream's models")
        check_callers(self.callers, [p.name for p in self.caller_policies])
        for price in self.prices:
            if price.model not in served:
                raise ValueError(f"prices: {price.model!r} is not served by any upstream")
        names = [u.name for u in self.upstreams]
        if len(set(names)) != len(names):
            raise ValueError(f"upstreams: names must be unique, got {names}")
        return self


def secrets_of(settings: GatewaySettings) -> Redactor:
    """A redactor for every secret this configuration holds: upstream keys, the router token, client keys."""
    return Redactor([
        *(u.resolve_api_key() for u in settings.upstreams), settings.router.resolve_token(), *settings.auth.resolve_keys(),
        *(secret for u in settings.upstreams for url in u.hosts for secret in url_secrets(url)),
        *(key for caller in settings.callers for key in caller.resolve_keys()), settings.redis.resolve_password(),
        metrics_token(settings.server),
    ])


def url_secrets(url: str) -> tuple[str, ...]:
    """The password (and the user:password pair) a URL carries, as secrets to redact wherever text is shown."""
    parts = urlsplit(url)
    if parts.password:
        return (parts.password, f"{parts.username}:{parts.password}")
    return (parts.username,) if parts.username else ()


def load_settings(config_file: Path | None = None, **overrides: Any) -> GatewaySettings:
    """The gateway's settings from overrides, GATEWAY_* env and an optional TOML file."""
    return load_toml_settings(GatewaySettings, config_file, "GATEWAY_CONFIG", **overrides)
