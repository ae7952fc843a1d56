"""routestack-routellm: RouteLLM's ``python -m routellm.openai_server`` command line, served by this stack.

    routestack-routellm --routers mf --strong-model llama3:70b --weak-model llama3 \\
        --base-url http://localhost:11434/v1 --api-key ollama

Old and new flag names alike (``--alt-base-url`` / ``--alt-api-key`` of RouteLLM's first
releases), RouteLLM's port (6060), its ``router-mf-<threshold>`` model names and a
``/health`` endpoint. The router embeds prompts locally: no OpenAI key is needed to route.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from service_core.cli import run_cli
from service_core.errors import ConfigError
from service_core.grpc_server import wait_for_signal

from .stack import RouteLLMOptions, running_stack

__all__ = ["main"]

logger = logging.getLogger("routellm_compat")


class _Named(argparse.Action):
    """Keeps which spelling of a flag was given (``--alt-base-url`` is RouteLLM's first releases'), so that an
    error names the flag its user typed."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        setattr(namespace, self.dest, values)
        setattr(namespace, f"{self.dest}_named", option_string or f"--{self.dest.replace('_', '-')}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="routestack-routellm",
        description="RouteLLM's OpenAI-compatible server command, run by routestack's router and gateway: "
        "same flags, port and router-mf-<threshold> model names; prompts are embedded locally, so routing needs "
        "no OpenAI key. OPENAI_API_KEY is read only for the completions of a bare OpenAI model name (no prefix, "
        "no --base-url); OPENAI_BASE_URL never.",
        epilog="docs/coming-from-routellm.md maps every flag.",
    )
    p.add_argument("--routers", nargs="+", default=["mf"], help="routers to serve; supported: mf (the default here)")
    p.add_argument("--strong-model", default="gpt-4-1106-preview",
                   help="ollama_chat/NAME, openai/NAME (with --base-url), or a bare NAME (default: gpt-4-1106-preview)")
    p.add_argument("--weak-model", default="anyscale/mistralai/Mixtral-8x7B-Instruct-v0.1",
                   help="as --strong-model (RouteLLM's default, an Anyscale model, is not served here: give one)")
    p.add_argument("--base-url", "--alt-base-url", dest="base_url", action=_Named,
                   help="the OpenAI-compatible server of openai/ and bare model names (or Ollama's, for ollama_chat/ only)")
    p.add_argument("--api-key", "--alt-api-key", dest="api_key", help="the key of --base-url's server")
    p.add_argument("--config", type=Path, help="RouteLLM's YAML config; mf.checkpoint_path: a local MF checkpoint to import")
    p.add_argument("--port", type=int, default=6060, help="HTTP port (RouteLLM's default 6060)")
    p.add_argument("--host", default="0.0.0.0", help="listen address (RouteLLM's: 0.0.0.0)")
    p.add_argument("--workers", type=int, default=0, help="accepted for RouteLLM's command line; one process serves")
    p.add_argument("--verbose", action="store_true", help="debug logging")
    p.add_argument("--embedding-base-url", default="https://api.openai.com/v1",
                   help="for an imported MF checkpoint only: the OpenAI-compatible /embeddings server")
    p.add_argument("--embedding-api-key-env", metavar="VAR",
                   help="for an imported MF checkpoint only: the environment variable holding the embedding key")
    return p


def read_config(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file")
    import yaml

    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config {path}: not valid YAML ({exc})".replace("\n", " ")) from None
    if config is not None and not isinstance(config, dict):
        raise ConfigError(f"--config {path}: expected a mapping of router name -> settings, as RouteLLM's config.example.yaml")
    return config


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return run_cli("routestack-routellm", lambda: _in_its_own_words(lambda: _run(args)))


# The gateway's settings this command writes from its flags: its errors name the flags its user gave.
OWN_WORDS = {
    "server.http_port (GATEWAY_SERVER__HTTP_PORT)": "--port", "server.host": "--host",
}


def _in_its_own_words(run: Callable[[], int]) -> int:
    try:
        return run()
    except ConfigError as exc:
        message = str(exc)
        for setting, flag in OWN_WORDS.items():
            message = message.replace(setting, flag)
        raise ConfigError(message) from None


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.workers > 1:
        logger.warning("--workers %d: this server runs one process (one event loop streams thousands of completions)", args.workers)
    options = RouteLLMOptions(
        routers=args.routers, strong_model=args.strong_model, weak_model=args.weak_model, base_url=args.base_url,
        api_key=args.api_key, config=read_config(args.config), host=args.host, port=args.port,
        embedding_base_url=args.embedding_base_url, embedding_api_key_env=args.embedding_api_key_env,
        url_named=getattr(args, "base_url_named", "--base-url"),
    )
    asyncio.run(_serve(options))
    return 0


async def _serve(options: RouteLLMOptions) -> None:
    async with running_stack(options) as stack:
        for role, model in stack.models.items():
            logger.info("%s model %s: %s at %s", role, model.given, model.provider, model.base_url)
        meaning = (
            "thresholds on RouteLLM's own MF win rate (imported checkpoint): they mean what they mean in RouteLLM"
            if stack.imported else
            "thresholds on this project's scorer, not RouteLLM's MF: calibrate, or use the share aliases "
            "router-mf-20 / -50 / -80"
        )
        gateway, router = stack.gateway, stack.router
        logger.info(
            "RouteLLM-compatible server listening on %s:%d, %s from this machine (models router-mf-<threshold>: %s); "
            "health at /health", options.host, gateway.http_port, stack.base_url, meaning,
        )
        logger.info(
            "loopback only: the gateway's gRPC API on 127.0.0.1:%d, the router on 127.0.0.1:%d",
            gateway.grpc_port, router.port,
        )
        await wait_for_signal()
        logger.info("shutting down")


if __name__ == "__main__":
    sys.exit(main())
