"""RouteLLM's options -> this project's router and gateway, started in this process.

Shared by the ``routestack-routellm`` command and the ``Controller``: one place turns
RouteLLM's routers, model names, base URL, key and config into settings.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway_service.config import GatewaySettings
from gateway_service.config import load_settings as load_gateway_settings
from gateway_service.server import GatewayApp, build_gateway
from router_service.config import RouterSettings
from router_service.config import load_settings as load_router_settings
from router_service.routellm_import import import_routellm
from router_service.server import RouterApp, build_router
from service_core.errors import ConfigError
from service_core.settings import with_section

from .models import ResolvedModel, resolve_models, upstream_settings

__all__ = ["RouteLLMOptions", "RunningStack", "running_stack"]

logger = logging.getLogger(__name__)

SUPPORTED_ROUTERS = ("mf",)
ROUTELLM_ROUTERS = ("mf", "sw_ranking", "bert", "causal_llm", "random")


@dataclass(frozen=True)
class RouteLLMOptions:
    routers: Sequence[str]
    strong_model: str
    weak_model: str
    base_url: str | None = None
    api_key: str | None = None
    config: Mapping[str, Any] | None = None  # RouteLLM's config: {"mf": {"checkpoint_path": ...}, ...}
    host: str = "127.0.0.1"
    port: int = 0
    embedding_base_url: str = "https://api.openai.com/v1"
    embedding_api_key_env: str | None = None
    url_named: str = "--base-url"  # how the user gave base_url: errors name it (--alt-base-url, api_base)
    environ: Mapping[str, str] | None = field(default=None, repr=False)  # tests; default os.environ


@dataclass
class RunningStack:
    router: RouterApp
    gateway: GatewayApp
    models: dict[str, ResolvedModel]
    imported: bool  # the mf router is an imported RouteLLM checkpoint

    @property
    def base_url(self) -> str:
        host = self.gateway.settings.server.host
        host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        return f"http://{host}:{self.gateway.http_port}/v1"


def check_routers(routers: Sequence[str]) -> None:
    for router in routers:
        if router not in SUPPORTED_ROUTERS:
            known = "one of RouteLLM's" if router in ROUTELLM_ROUTERS else "not a RouteLLM router"
            raise ConfigError(
                f"--routers {router}: {known}, but not served here; supported: {', '.join(SUPPORTED_ROUTERS)} "
                "(the matrix-factorisation router: this project's scorer, or RouteLLM's own MF checkpoint "
                "through --config)"
            )


def _checkpoint(config: Mapping[str, Any] | None) -> Path | None:
    mf = (config or {}).get("mf") or {}
    raw = mf.get("checkpoint_path")
    if raw is None:
        return None
    path = Path(str(raw)).expanduser()
    if not path.exists():
        hint = (
            f"it looks like a Hugging Face repo id, and nothing is downloaded here: fetch it where you can "
            f"(huggingface-cli download {raw} --local-dir DIR) and give DIR"
            if str(raw).count("/") == 1 and not str(raw).startswith((".", "/", "~")) else "no such file or folder"
        )
        raise ConfigError(f"config mf.checkpoint_path {raw!r}: {hint}")
    return path


def plan(options: RouteLLMOptions, scratch: Path) -> tuple[RouterSettings, GatewaySettings, dict[str, ResolvedModel], bool]:
    """The router's and gateway's settings for ``options`` (the router address is filled in at start)."""
    check_routers(options.routers)
    models = resolve_models(
        {"strong": options.strong_model, "weak": options.weak_model}, options.base_url, options.api_key, options.environ,
        options.url_named,
    )
    strong, weak = models["strong"].name, models["weak"].name
    router: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": 0},
        "routing": {"strong_model": strong, "weak_model": weak},
    }
    checkpoint = _checkpoint(options.config)
    if checkpoint is not None:
        if not options.embedding_api_key_env:
            raise ConfigError(
                "RouteLLM's MF checkpoint scores OpenAI text-embedding-3-small embeddings: give "
                "--embedding-api-key-env VAR (the environment variable holding that key) and, for another "
                "OpenAI-compatible server, --embedding-base-url. OPENAI_API_KEY is not read unless you name it"
            )
        scorer = scratch / "mf-routellm.onnx"
        card = import_routellm(checkpoint, scorer)
        logger.info("imported RouteLLM MF checkpoint %s (version %s)", checkpoint, card.version)
        router["scorers"] = [{"name": "mf", "path": str(scorer)}]
        router["embedder"] = {"backend": "openai", "openai": {
            "base_url": options.embedding_base_url, "model": "text-embedding-3-small",
            "api_key_env": options.embedding_api_key_env, "dim": 1536,
        }}
    gateway: dict[str, Any] = {
        # RouteLLM's server is HTTP only: the gateway's gRPC API (which relays to the paid upstream with the
        # operator's key) listens on loopback, never on --host.
        "server": {"host": options.host, "http_port": options.port, "grpc_port": 0, "grpc_host": "127.0.0.1"},
        "upstreams": upstream_settings(models, options.url_named),
        "default_model": strong,  # fail open to quality when the router is down
        "fallback_model": weak,
    }
    if checkpoint is not None:
        gateway["policies"], gateway["replace_policies"] = (), True  # RouteLLM's thresholds, no share calibration
    return load_router_settings(None, **router), load_gateway_settings(None, **gateway), models, checkpoint is not None


@asynccontextmanager
async def running_stack(options: RouteLLMOptions) -> AsyncIterator[RunningStack]:
    """Router and gateway for ``options``, up until the block ends."""
    with tempfile.TemporaryDirectory(prefix="routestack-routellm-") as scratch:
        router_settings, gateway_settings, models, imported = plan(options, Path(scratch))
        router = await build_router(router_settings)
        try:
            gateway = await build_gateway(with_section(gateway_settings, "router", address=f"127.0.0.1:{router.port}"))
            try:
                yield RunningStack(router, gateway, models, imported)
            finally:
                await gateway.stop()
        finally:
            await router.stop()
