"""RouteLLM's model names (LiteLLM style) as the gateway's upstreams.

- ``ollama_chat/NAME`` (or ``ollama/NAME``): Ollama's own API, at ``--base-url`` when every
  model is an Ollama one (a trailing ``/v1`` dropped), else at http://localhost:11434.
- ``openai/NAME``: any OpenAI-compatible server at ``--base-url`` (required), with ``--api-key``.
- a bare ``NAME`` with ``--base-url``: that OpenAI-compatible server (RouteLLM's first
  releases, ``--alt-base-url``); without it, OpenAI itself, keyed by OPENAI_API_KEY: read
  because the user named an OpenAI model, and only for that model's completions.
- any other LiteLLM provider prefix (``anyscale/``, ``together_ai/``...) is refused by name.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from service_core.errors import ConfigError

__all__ = ["ResolvedModel", "resolve_models", "upstream_settings"]

OLLAMA_PREFIXES = ("ollama_chat/", "ollama/")
OLLAMA_DEFAULT = "http://localhost:11434"
OPENAI_URL = "https://api.openai.com/v1"
# LiteLLM providers this server does not speak (its own prefixes); anything else with a slash is a bare name.
OTHER_PROVIDERS = frozenset({
    "anyscale", "anthropic", "azure", "azure_ai", "bedrock", "cohere", "cohere_chat", "databricks", "deepinfra",
    "deepseek", "fireworks_ai", "gemini", "groq", "huggingface", "mistral", "nvidia_nim", "openrouter", "perplexity",
    "replicate", "sagemaker", "together_ai", "vertex_ai", "vllm", "watsonx", "xai", "hosted_vllm", "text-completion-openai",
})
SUPPORTED = "ollama_chat/NAME (Ollama), openai/NAME with --base-url (any OpenAI-compatible server), or a bare NAME " \
    "(with --base-url: that server; without: OpenAI itself, with OPENAI_API_KEY)"


@dataclass(frozen=True)
class ResolvedModel:
    """Where one of RouteLLM's model names is served, and the name this stack gives it."""

    given: str  # as the user wrote it
    name: str  # the name sent upstream, and the router's / gateway's model name
    provider: str  # "ollama" | "openai"
    base_url: str
    api_key: str | None = None
    api_key_env: str | None = None


def resolve_models(
    models: Mapping[str, str], base_url: str | None, api_key: str | None, environ: Mapping[str, str] | None = None,
    url_named: str = "--base-url",
) -> dict[str, ResolvedModel]:
    """``models``: role ("strong", "weak") -> RouteLLM model name. Raises ConfigError naming the flag to fix;
    ``url_named``: what the user calls the server's URL (``--alt-base-url``, the Controller's ``api_base``)."""
    env = os.environ if environ is None else environ
    every_ollama = all(m.startswith(OLLAMA_PREFIXES) for m in models.values())
    resolved = {}
    for role, given in models.items():
        flag = f"--{role}-model"
        if given.startswith(OLLAMA_PREFIXES):
            name = given.split("/", 1)[1]
            url = base_url.rstrip("/").removesuffix("/v1") if base_url and every_ollama else OLLAMA_DEFAULT
            resolved[role] = ResolvedModel(given, name, "ollama", url)
        elif given.startswith("openai/"):
            if not base_url:
                raise ConfigError(f"{flag} {given}: openai/NAME is an OpenAI-compatible server: give its {url_named}")
            resolved[role] = ResolvedModel(given, given.removeprefix("openai/"), "openai", base_url.rstrip("/"), api_key)
        elif "/" in given and given.split("/", 1)[0] in OTHER_PROVIDERS:
            provider = given.split("/", 1)[0]
            raise ConfigError(
                f"{flag} {given}: LiteLLM's {provider!r} provider is not spoken here; use {SUPPORTED}. "
                f"(A {provider} OpenAI-compatible endpoint works as openai/NAME with {url_named}.)"
            )
        elif base_url:
            resolved[role] = ResolvedModel(given, given, "openai", base_url.rstrip("/"), api_key)
        else:
            if not env.get("OPENAI_API_KEY"):
                raise ConfigError(
                    f"{flag} {given} is an OpenAI model (no prefix, no {url_named}), so its completions need "
                    f"OPENAI_API_KEY in the environment; or give {url_named} for an OpenAI-compatible server, "
                    "or ollama_chat/NAME for Ollama"
                )
            resolved[role] = ResolvedModel(given, given, "openai", OPENAI_URL, api_key_env="OPENAI_API_KEY")
    names = [r.name for r in resolved.values()]
    if len(set(names)) != len(names):
        raise ConfigError(f"--strong-model and --weak-model name the same model ({names[0]}): route between two")
    return resolved


def upstream_settings(models: Mapping[str, ResolvedModel], url_named: str = "--base-url") -> list[dict[str, Any]]:
    """The gateway's [[upstreams]]: one a server (models on the same server and key share one)."""
    upstreams: dict[tuple[str, str, str | None, str | None], dict[str, Any]] = {}
    for model in models.values():
        key = (model.provider, model.base_url, model.api_key, model.api_key_env)
        if key not in upstreams:
            upstream: dict[str, Any] = {
                "name": f"{model.provider}-{len(upstreams) + 1}", "provider": model.provider,
                "base_url": model.base_url, "models": [],
                # errors name the flag its user gave (or the default it stands for), not a setting never written
                "url_named_as": url_named if model.base_url not in (OLLAMA_DEFAULT, OPENAI_URL)
                else f"{url_named} (not given: {model.base_url} was used)",
            }
            if model.api_key:
                upstream["api_key"] = model.api_key
            if model.api_key_env:
                upstream["api_key_env"] = model.api_key_env
            upstreams[key] = upstream
        upstreams[key]["models"].append(model.name)
    return list(upstreams.values())
