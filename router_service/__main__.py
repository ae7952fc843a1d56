"""router-service: serve the router, route a prompt, build the embedder, train and evaluate scorers.

    router-service serve [--config FILE]
    router-service route "prompt" [--address HOST:PORT]
    router-service reload [--scorer NAME=FILE] [--address HOST:PORT]   (swap scorers in a running router)
    router-service build-embedder
    router-service label | train | calibrate | eval   (learn from your traffic; see --help of each)
    router-service distill-static             (rebuild the bundled static embedder; needs torch)
    router-service import-routellm CHECKPOINT --out FILE   (RouteLLM's MF weights as a scorer file)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

from service_core.cli import run_cli
from service_core.grpc_client import add_client_arguments, client_from_args, health_command
from service_core.settings import with_section

from .config import RouterSettings, load_settings
from .errors import ConfigError

__all__ = ["main"]

logger = logging.getLogger("router_service")

CONFIG_HELP = "TOML config file (default: $ROUTER_CONFIG); ROUTER_* env variables override it, e.g. ROUTER_SERVER__PORT=50052"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="router-service",
        description="LLM router: which model should answer this prompt? gRPC service router.v1.RouterService.",
        epilog="Configuration: docs/router.md. Every setting also reads from ROUTER_<SECTION>__<KEY>.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the gRPC router until SIGTERM")
    serve.add_argument("--config", type=Path, help=CONFIG_HELP)
    serve.add_argument("--host", help="listen address (server.host, default 127.0.0.1; 0.0.0.0 in containers)")
    serve.add_argument("--port", type=int, help="listen port (server.port, default 50051)")
    serve.add_argument("--sample", metavar="PROMPT", help="once serving, route PROMPT over gRPC and log the decision")

    route = sub.add_parser("route", help="route one prompt and print the decision as JSON")
    route.add_argument("prompt")
    route.add_argument("--config", type=Path, help=CONFIG_HELP)
    route.add_argument("--address", help="ask a running router at HOST:PORT instead of loading one in-process")
    route.add_argument("--threshold", type=float, help="route strong when the strong win rate >= this")
    route.add_argument("--strong-share", type=float, help="target share of strong calls, 0..1")
    route.add_argument("--scorer", default="", help="scorer name (default: the first configured)")
    add_client_arguments(route)

    reload = sub.add_parser(
        "reload",
        help="swap scorer files into a running router without a restart (RouterAdmin.ReloadScorers; SIGHUP re-reads "
        "the config file instead); a bad file is refused and the serving scorers stay",
    )
    reload.add_argument("--config", type=Path, help=CONFIG_HELP)
    reload.add_argument("--address", help="HOST:PORT (default: 127.0.0.1 and server.port)")
    reload.add_argument(
        "--scorer", action="append", default=[], metavar="NAME=FILE",
        help="serve FILE (a path on the router's machine) as scorer NAME (repeatable); scorers not named are "
        "re-read from their current file, so one rewritten in place (calibrate) is picked up",
    )
    add_client_arguments(reload)

    health = sub.add_parser("health", help="exit 0 if the router at --address is SERVING (container health checks)")
    health.add_argument("--config", type=Path, help=CONFIG_HELP)
    health.add_argument("--address", help="HOST:PORT (default: 127.0.0.1 and server.port)")
    add_client_arguments(health)

    build = sub.add_parser("build-embedder", help="build the local ONNX embedder into its cache (done at first start otherwise)")
    build.add_argument("--config", type=Path, help=CONFIG_HELP)

    imported = sub.add_parser(
        "import-routellm",
        help="write a scorer file from a RouteLLM MF checkpoint (its folder with model.safetensors); it scores "
        "as RouteLLM does, with OpenAI text-embedding-3-small embeddings (set [embedder] backend = \"openai\")",
    )
    imported.add_argument("checkpoint", type=Path, help="RouteLLM's MF checkpoint folder, or its model.safetensors")
    imported.add_argument("--out", type=Path, required=True, help="the scorer file to write (.onnx)")
    imported.add_argument("--name", default="mf", help="scorer name stored in the file (default: mf)")
    imported.add_argument("--strong-model", default="gpt-4-1106-preview", help="RouteLLM's strong model of the pair")
    imported.add_argument("--weak-model", default="mixtral-8x7b-instruct-v0.1", help="RouteLLM's weak model of the pair")

    from .training import cli as training_cli

    training_cli.add_commands(sub)
    return parser


def _settings(args: argparse.Namespace) -> RouterSettings:
    """The config file and env, then the command line's flags, validated like the file."""
    server: dict[str, object] = {}
    if getattr(args, "host", None):
        server["host"] = args.host
    if getattr(args, "port", None) is not None:
        server["port"] = args.port
    return with_section(load_settings(getattr(args, "config", None)), "server", **server)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return run_cli("router-service", lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    logging.basicConfig(
        level=settings.server.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.command == "serve":
        from .server import serve

        asyncio.run(serve(settings, sample=args.sample, reread=lambda: _settings(args)))
    elif args.command == "route":
        from .client import route_once

        decision = asyncio.run(route_once(settings, args))
        print(json.dumps(decision, indent=2))
    elif args.command == "reload":
        from .client import reload_remote

        paths = dict(_name_and_file(item) for item in args.scorer)
        client = client_from_args(args.address or f"127.0.0.1:{settings.server.port}", args, 60.0)
        print(json.dumps(asyncio.run(reload_remote(client, paths)), indent=2))
    elif args.command == "health":
        return health_command(client_from_args(args.address or f"127.0.0.1:{settings.server.port}", args, 3.0))
    elif args.command == "build-embedder":
        from .adapters.local_embedder import ensure_local_model

        model, tokenizer = ensure_local_model(settings.embedder.local)
        print(f"local embedder: {model}\ntokenizer: {tokenizer}")
    elif args.command == "import-routellm":
        from .routellm_import import import_routellm

        card = import_routellm(args.checkpoint, args.out, name=args.name, strong=args.strong_model, weak=args.weak_model)
        print(
            f"wrote {args.out}: scorer {card.name!r} version {card.version}, pair {card.strong_model} / "
            f"{card.weak_model}, embedder {card.embedder}. Serve it with [[scorers]] path = \"{args.out}\" and "
            "[embedder] backend = \"openai\" (model text-embedding-3-small, api_key_env naming your key)"
        )
    else:
        from .training import cli as training_cli

        return training_cli.run(args, settings)
    return 0


def _name_and_file(item: str) -> tuple[str, str]:
    name, sep, path = item.partition("=")
    if not sep or not name or not path:
        raise ConfigError(f"--scorer {item!r}: give NAME=FILE, e.g. --scorer difficulty=/models/mine.onnx")
    return name, str(Path(path).resolve())


if __name__ == "__main__":
    sys.exit(main())
