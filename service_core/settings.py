"""The settings base of both services: frozen sections, TOML + env sources, secrets, CLI overrides.

Sources, highest first: keyword arguments (tests), the service's environment
variables (``ROUTER_*`` / ``GATEWAY_*``, nested with ``__``), the TOML file given
by ``--config`` or the service's ``*_CONFIG`` variable, then the defaults. No
other ambient variable is read, except one that a setting names explicitly
(``api_key_env``, ``token_env``).
"""

from __future__ import annotations

import difflib
import logging
import os
import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from .errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = [
    "GrpcClientSettings",
    "Section",
    "TlsServerSettings",
    "TomlSettings",
    "describe_settings_error",
    "load_toml_settings",
    "secret_value",
    "with_section",
]


def secret_value(value: SecretStr | None, env: str | None) -> str | None:
    """A secret given inline, else read from the env variable the config names, else None.

    Only the variable named is read: no ambient OPENAI_* or similar fallback."""
    if value is not None:
        return value.get_secret_value()
    return os.environ.get(env) if env else None


class Section(BaseModel):
    """A settings section: frozen, and a mistyped key is an error, not a silent default."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class TlsServerSettings(Section):
    """TLS of a listener: one section type for every server of both services."""

    tls_cert: Path | None = Field(None, description="PEM certificate chain: serve over TLS")
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert")
    tls_client_ca: Path | None = Field(None, description="PEM CA: require client certificates signed by it (mTLS)")


class GrpcClientSettings(Section):
    """How to call a gRPC service: where, how long, with which token and TLS."""

    address: str = Field(description="host:port of the service")
    timeout_s: float = Field(10.0, gt=0, description="deadline of a call")
    token: SecretStr | None = Field(None, description="the service's bearer token, if it has one")
    token_env: str | None = Field(None, description="name of the env variable holding the token")
    tls_ca: Path | None = Field(None, description="PEM CA of the service's certificate: call it over TLS")
    tls_cert: Path | None = Field(None, description="PEM client certificate, for a service that requires mTLS")
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert")
    tls_server_name: str | None = Field(None, description="the name in the service's certificate, if not the address")

    def resolve_token(self) -> str | None:
        return secret_value(self.token, self.token_env)


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


Settings = TypeVar("Settings", bound=TomlSettings)


def load_toml_settings(cls: type[Settings], config_file: Path | None, env_var: str, **overrides: Any) -> Settings:
    """Build ``cls`` from overrides, env and the TOML file given or named by ``env_var``.

    The file is named in a subclass's model_config, since pydantic-settings takes no
    file argument."""
    env_path = os.environ.get(env_var)
    path = config_file or (Path(env_path) if env_path else None)
    warn_unknown_env(cls, env_var)
    if path is None:
        return _built(cls, cls, overrides, "")
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} not found (given by --config or {env_var})")
    try:
        tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    from_file: type[Settings] = type(f"{cls.__name__}FromFile", (cls,), {"model_config": SettingsConfigDict(toml_file=path)})
    return _built(from_file, cls, overrides, f" in {path}")


def _built(make: type[Settings], cls: type[Settings], overrides: dict[str, Any], where: str) -> Settings:
    try:
        return make(**overrides)
    except ValidationError as exc:
        raise ConfigError(describe_settings_error(cls, exc, where)) from None


def describe_settings_error(cls: type[BaseModel], exc: ValidationError, where: str = "") -> str:
    """Each wrong key by its dotted name, what is wrong, and for a key that names nothing the nearest that does
    ("did you mean http_port?"); without pydantic's own wording and links."""
    lines = []
    for error in exc.errors()[:5]:
        loc = [str(part) for part in error["loc"]]
        key = ".".join(loc) or "the settings"
        if error["type"] == "extra_forbidden":
            known = _fields_at(cls, loc[:-1])
            near = difflib.get_close_matches(loc[-1], known, n=1, cutoff=0.6)
            hint = f"; did you mean {'.'.join([*loc[:-1], near[0]])}?" if near else f"; known here: {', '.join(known)}"
            lines.append(f"{key}: no such setting{where}{hint}")
        else:
            lines.append(f"{key}: {error['msg']}{where}")
    more = f" (and {len(exc.errors()) - 5} more)" if len(exc.errors()) > 5 else ""
    return "invalid configuration: " + "; ".join(lines) + more


def _fields_at(cls: type[BaseModel], path: list[str]) -> list[str]:
    model: Any = cls
    for part in path:
        fields = getattr(model, "model_fields", None)
        if fields is None or part not in fields:
            return []
        model = _section_type(fields[part].annotation)
    return sorted(getattr(model, "model_fields", {}))


def warn_unknown_env(cls: type[TomlSettings], config_var: str) -> None:
    """Warn about variables with the settings' prefix that name no setting (a typo is otherwise silent)."""
    prefix = str(cls.model_config.get("env_prefix") or "")
    delimiter = str(cls.model_config.get("env_nested_delimiter") or "__")
    if not prefix:
        return
    for name in sorted(os.environ):
        if not name.startswith(prefix) or name == config_var:
            continue
        model: Any = cls
        parts = name[len(prefix) :].lower().split(delimiter)
        for depth, part in enumerate(parts):
            fields = getattr(model, "model_fields", None)
            if fields is None or part not in fields:
                near = difflib.get_close_matches(part, list(fields or ()), n=1, cutoff=0.6)
                hint = f" (did you mean {prefix}{delimiter.join([*parts[:depth], near[0]]).upper()}?)" if near else ""
                if depth == 0:  # pydantic-settings reads only known names: this one really is ignored
                    logger.warning("%s names no setting (no %r here); it is ignored%s", name, part, hint)
                    break
                # inside a known section it would reach the settings and be refused there, in pydantic's words
                raise ConfigError(f"{name} names no setting (no {part!r} in {'.'.join(parts[:depth])}){hint}")
            model = _section_type(fields[part].annotation)


def _section_type(annotation: Any) -> Any:
    """The settings section inside an annotation (``X | None`` -> X); None for plain values."""
    candidates = [annotation, *getattr(annotation, "__args__", ())]
    return next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)


Model = TypeVar("Model", bound=BaseModel)


def with_section(settings: Model, section: str, **values: Any) -> Model:
    """``settings`` with some keys of one section replaced (command-line flags), validated like the file."""
    if not values:
        return settings
    current = getattr(settings, section)
    try:
        updated = type(current).model_validate({**current.model_dump(), **values})
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        raise ConfigError(f"{section}.{key}: {first['msg']} (given on the command line)") from None
    return settings.model_copy(update={section: updated})
