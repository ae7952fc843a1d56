"""gateway-service: OpenAI-compatible HTTP and gRPC chat, routed by the router service.

    gateway-service serve [--config FILE] [--workers N]   the gateway alone (router elsewhere)
    gateway-service up [--sample PROMPT ...]       router + gateway in one process, for local use
    gateway-service spend | report [--out DIR]     spend and savings of a running gateway (GET /v1/spend)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from importlib.metadata import entry_points
from pathlib import Path

import httpx

from service_core.cli import run_cli
from service_core.errors import ConfigError
from service_core.grpc_client import add_client_arguments, client_from_args, health_command
from service_core.grpc_server import wait_for_signal
from service_core.heap import freeze_startup_heap
from service_core.settings import with_section

from .accounting.report import fetch_spend, read_spend, savings_markdown, spend_table, write_report
from .config import GatewaySettings, load_settings
from .routing.words import RoutedText
from .server import GatewayApp, build_gateway, serve

__all__ = ["main"]

logger = logging.getLogger("gateway_service")

CONFIG_HELP = "TOML config file (default: $GATEWAY_CONFIG); GATEWAY_* env variables override it, e.g. GATEWAY_SERVER__HTTP_PORT=8080"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway-service",
        description="LLM gateway: asks the router which model should answer, then streams the completion "
        "from Ollama or an OpenAI-compatible server, to OpenAI SDK (HTTP) and gRPC clients.",
        epilog="Configuration: docs/gateway.md (callers and budgets: docs/callers-and-budgets.md). Every setting also reads from GATEWAY_<SECTION>__<KEY>.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser("serve", help="run the gateway until SIGTERM (the router runs elsewhere)")
    serve.add_argument("--config", type=Path, help=CONFIG_HELP)
    serve.add_argument(
        "--workers", type=int, metavar="N",
        help="processes sharing the ports (server.workers; default 0: one per CPU this process may use, its cgroup "
        "quota included); limits are split among them, metrics summed",
    )
    health = sub.add_parser("health", help="exit 0 if the gateway at --address is SERVING (container health checks)")
    health.add_argument("--config", type=Path, help=CONFIG_HELP)
    health.add_argument("--address", help="HOST:PORT of the gateway's gRPC port (default: 127.0.0.1 and server.grpc_port)")
    add_client_arguments(health)
    spend = sub.add_parser(
        "spend", help="print each caller's requests, strong share, spend, all-strong baseline and savings "
        "(from a running gateway's GET /v1/spend)",
    )
    _add_gateway_address(spend)
    spend.add_argument("--json", action="store_true", help="print the endpoint's JSON instead of the table")
    report = sub.add_parser(
        "report", help="write the savings report: strong share, spend against the all-strong baseline, per caller "
        "and per day, as markdown tables (savings.md) and a plot (savings.png)",
    )
    _add_gateway_address(report)
    report.add_argument(
        "--from", dest="source", type=Path, metavar="FILE",
        help="a saved GET /v1/spend answer (`gateway-service spend --json > spend.json`) instead of --url",
    )
    report.add_argument("--out", type=Path, default=Path("savings"), help="folder to write into (default: %(default)s)")
    report.add_argument("--no-plot", action="store_true", help="tables only (the plot needs matplotlib: the report extra)")
    up = sub.add_parser("up", help="run router and gateway together in one process, for local use")
    up.add_argument("--config", type=Path, help=CONFIG_HELP)
    up.add_argument("--router-config", type=Path, help="the router's TOML config (default: $ROUTER_CONFIG)")
    up.add_argument(
        "--sample", metavar="PROMPT", action="append",
        help="once up, route PROMPT (repeatable) and try a short completion of the last one",
    )
    return parser


def _add_gateway_address(command: argparse.ArgumentParser) -> None:
    """Where a command finds a running gateway's GET /v1/spend, and the admin key it reads it with."""
    command.add_argument("--url", default="http://127.0.0.1:8000", help="the gateway's HTTP root (default: %(default)s)")
    command.add_argument("--key-env", metavar="VAR", help="env variable holding an admin caller's API key")


async def _sample(gateway: GatewayApp, prompts: list[str]) -> None:
    """Show the stack working: each routing decision, then a completion or the error naming what to start."""
    settings = gateway.settings
    for prompt in prompts:
        decision = await gateway.router.route(
            RoutedText(prompt), threshold=None, strong_share=None,
            default_model=settings.default_model, request_id="sample",
        )
        if decision.degraded:
            logger.warning("sample prompt %r: %s", prompt, decision.reason)
        else:
            logger.info(
                "sample prompt %r routed to %s (score %.4f, threshold %.4f)",
                prompt, decision.model, decision.score, decision.threshold,
            )
    prompt = prompts[-1]
    host = "127.0.0.1" if settings.server.host in ("0.0.0.0", "::", "") else settings.server.host
    url = f"http://{host}:{gateway.http_port}/v1/chat/completions"
    body = {"model": "router", "messages": [{"role": "user", "content": prompt}], "max_tokens": 64}
    key, shown_key = _sample_key(settings)
    headers = {"authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient(timeout=120) as client:
        response = await client.post(url, json=body, headers=headers)
    if response.status_code == 200:
        answer = response.json()["choices"][0]["message"]["content"]
        logger.info("sample completion from %s: %s", response.headers.get("x-route-model"), answer[:300])
    else:
        message = response.json().get("error", {}).get("message")
        logger.warning("sample completion failed (HTTP %d): %s", response.status_code, message)
    auth = f" -H \"authorization: Bearer {shown_key}\"" if shown_key else ""
    logger.info(
        "next: curl %s%s -H 'content-type: application/json' -d '{\"model\": \"router\", \"messages\": "
        "[{\"role\": \"user\", \"content\": \"hi\"}]}'; or any OpenAI SDK with base_url=%s%s; each decision, "
        "in a browser: %s; README \"Use it\" goes on from there. Ctrl-C stops.",
        url, auth, url.removesuffix("/chat/completions"), f" and api_key={shown_key}" if shown_key else "",
        url.removesuffix("/v1/chat/completions") + "/ui",
    )


# The router's entry point yields the address to call, and what SIGHUP does (reload its scorers).
LocalRouter = Callable[[Path | None], AbstractAsyncContextManager[tuple[str, Callable[[], Awaitable[None]]]]]


def _local_router() -> LocalRouter:
    """The router's in-process entry point, if the router is installed beside the gateway."""
    found = list(entry_points(group="routestack.local_router"))
    hint = "gateway-service up runs the router in this process: install it (pip install '.[router]'), " \
        "or run the router on its own and start the gateway with `gateway-service serve`"
    if not found:
        raise ConfigError(hint)
    try:
        start: LocalRouter = found[0].load()
    except ImportError as exc:
        raise ConfigError(f"{hint} ({exc})") from None
    return start


def _sample_key(settings: GatewaySettings) -> tuple[str | None, str]:
    """With API keys on, the key the sample completion goes with (the first caller's, or auth.api_keys'), and how the
    ``next:`` line shows it: the variable that holds it, or a placeholder; never the key itself."""
    for caller in settings.callers:
        keys = caller.resolve_keys()
        if keys:
            shown = f"${caller.api_key_env}" if caller.api_key_env else f"<{caller.name}'s key>"
            return keys[0], shown
    keys = settings.auth.resolve_keys()
    return (keys[0], "<your key>") if keys else (None, "")


def unused_router_address(settings: GatewaySettings, local: str) -> str | None:
    """The warning for a configured ``[router] address`` that ``up`` will not call (it runs its own router at
    ``local``), or None where none was configured or it is the one ``up`` runs."""
    configured = settings.router.address
    host, _, port = configured.rpartition(":")
    same = configured == local or (port == local.rpartition(":")[2] and host in ("127.0.0.1", "localhost", "[::1]"))
    if "address" not in settings.router.model_fields_set or same:
        return None
    return (
        f"up runs its own router in this process, on {local}: [router] address = {configured!r} is not used. To use "
        "that router, start the gateway alone: gateway-service serve"
    )


async def _up(settings: GatewaySettings, router_config: Path | None, samples: list[str] | None) -> None:
    async with _local_router()(router_config) as (router_address, hangup):
        unused = unused_router_address(settings, router_address)
        if unused:
            logger.warning("%s", unused)
        settings = with_section(settings, "router", address=router_address)
        gateway = await build_gateway(settings)
        freeze_startup_heap()
        try:
            host = settings.server.host
            logger.info(
                "up: router gRPC on %s, gateway OpenAI HTTP on http://%s:%d/v1, gateway gRPC on %s:%d",
                router_address, host, gateway.http_port, host, gateway.grpc_port,
            )
            async def on_hangup() -> None:  # as the router's `serve`: SIGHUP reloads [[scorers]], never stops
                await hangup()

            signals = asyncio.create_task(wait_for_signal(on_hangup=on_hangup))
            await asyncio.sleep(0)  # its handlers are in place before anything says the stack is up
            if samples:
                await _sample(gateway, samples)
            await signals
            logger.info("shutting down: not ready, draining streams for up to %gs", settings.server.grace_s)
        finally:
            await gateway.stop()
            logger.info("gateway and router stopped")


def _spend(args: argparse.Namespace) -> int:
    """The spend table of a running gateway (GET /v1/spend)."""
    report = fetch_spend(args.url, args.key_env)
    print(json.dumps(report, indent=2) if args.json else spend_table(report))
    return 0


def _report(args: argparse.Namespace) -> int:
    """The savings report: markdown tables and a plot, from a running gateway or a saved /v1/spend answer."""
    report = read_spend(args.source) if args.source else fetch_spend(args.url, args.key_env)
    written = write_report(report, args.out, plot=not args.no_plot)
    print(savings_markdown(report))
    print("wrote " + ", ".join(str(p) for p in written), file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return run_cli("gateway-service", lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    if args.command == "spend":
        return _spend(args)
    if args.command == "report":
        return _report(args)
    settings = load_settings(args.config)
    logging.basicConfig(
        level=settings.server.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per upstream call is noise
    if args.command == "health":
        return health_command(client_from_args(args.address or f"127.0.0.1:{settings.server.grpc_port}", args, 3.0))
    if args.command == "serve":
        from .workers import run_workers, worker_count

        workers = worker_count(settings, args.workers)
        if workers > 1:
            return run_workers(settings, args.config, workers)
        asyncio.run(serve(settings))
    else:
        asyncio.run(_up(settings, args.router_config, args.sample))
    return 0


if __name__ == "__main__":
    sys.exit(main())
