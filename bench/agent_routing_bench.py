"""Routing agent-sized conversations: what the router and the gateway spend on a 60 KB and a 400 KB request.

    python -m bench.agent_routing_bench [--rounds 5] [--calls 30]

Bodies: the largest recorded Claude Code 2.1.328 request (~57 KB) and the same conversation grown to ~400 KB by
its tool loop (bench/agents_bench.py), each ending in a new user turn (a fresh question per call, so nothing is
answered from the router's cache).

1. Gateway, in process: CPU per request of what routing adds before the router is asked: the user's words
   (routing/words.py: boilerplate set aside, bounded) and the context-window estimate (routing/fit.py).
2. Router, a real gRPC server in this process (the default MiniLM embedder, scorer and background-task detector):
   latency of one Route call, sequential, and CPU per call (client and server together), for what the gateway now
   sends (the system prompt's head, the user's words and the request's shape) beside the baseline of the whole
   conversation as a chat (the router embeds only its last user message, but reads and checks every message).

Interleaved rounds, median (min-max) over rounds. Results: bench/results/agent_routing.md.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import grpc
import orjson

from bench.agents_bench import grown, largest
from bench.figures import spread
from gateway_service.apis.anthropic_wire import MessagesRequest
from gateway_service.domain import ChatParams
from gateway_service.routing.fit import estimate_request_tokens
from gateway_service.routing.router_client import route_request
from gateway_service.routing.words import users_words
from routing_api.router.v1 import router_pb2, router_pb2_grpc

RESULTS = Path(__file__).resolve().parent / "results"
QUESTIONS = ("Why does the test in tests/test_{i}.py fail only on CI?", "Rename the helper in module {i} and update "
             "its callers.", "What does line {i} of hello.py print, and why?")


def sized_bodies() -> dict[str, dict[str, Any]]:
    recorded = largest("claude-code-2.1.328")
    return {"Claude Code, recorded": recorded, "Claude Code, grown": grown(recorded, "anthropic")}


def with_turn(body: dict[str, Any], i: int) -> dict[str, Any]:
    body = copy.copy(body)
    body["messages"] = [*body["messages"], {"role": "user", "content": QUESTIONS[i % 3].format(i=i)}]
    return body


def params_of(body: dict[str, Any]) -> ChatParams:
    return MessagesRequest.model_validate(body).params()


def gateway_cpu_ms(params: list[ChatParams]) -> float:
    started = time.process_time()
    for p in params:
        users_words(p)
        estimate_request_tokens(p)
    return (time.process_time() - started) * 1e3 / len(params)


def as_sent(params: ChatParams) -> router_pb2.RouteRequest:
    text = users_words(params)
    assert text is not None
    return route_request(text)


def whole(params: ChatParams) -> router_pb2.RouteRequest:
    said = [router_pb2.ChatMessage(role=m.role, content=m.content) for m in params.messages]
    return router_pb2.RouteRequest(chat=router_pb2.Chat(messages=said))


async def route_calls(stub: Any, requests: list[router_pb2.RouteRequest]) -> tuple[float, float]:
    """(median latency ms, CPU ms a call) of ``requests`` sent one after another."""
    latencies = []
    cpu = time.process_time()
    for request in requests:
        started = time.perf_counter()
        await stub.Route(request, timeout=30)
        latencies.append((time.perf_counter() - started) * 1e3)
    return statistics.median(latencies), (time.process_time() - cpu) * 1e3 / len(requests)



async def main_async(rounds: int, calls: int) -> str:
    from router_service.config import RouterSettings
    from router_service.server import build_router

    bodies = sized_bodies()
    sizes = {name: len(orjson.dumps(body)) // 1024 for name, body in bodies.items()}
    gateway: dict[str, list[float]] = {name: [] for name in bodies}
    router: dict[tuple[str, str], list[tuple[float, float]]] = {}
    app = await build_router(RouterSettings(server={"host": "127.0.0.1", "port": 0, "grace_s": 5}))
    counter = 0
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = router_pb2_grpc.RouterServiceStub(channel)
            for _ in range(rounds):
                for name, body in bodies.items():
                    params = [params_of(with_turn(body, counter + i)) for i in range(calls)]
                    counter += calls
                    gateway[name].append(gateway_cpu_ms(params))
                    for way, build in (("words (now)", as_sent), ("whole chat (before)", whole)):
                        fresh = [params_of(with_turn(body, counter + i)) for i in range(calls)]
                        counter += calls
                        router.setdefault((name, way), []).append(await route_calls(stub, [build(p) for p in fresh]))
    finally:
        await app.stop()
    lines = [
        f"# Routing agent-sized conversations ({time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs; {rounds} interleaved rounds of {calls} calls, median (min-max) over rounds)",
        "",
        "| request | body | gateway: words + window estimate, CPU ms | router call, what is sent | Route latency ms | CPU ms a call (client + router) |",
        "|---|---|---|---|---|---|",
    ]
    for name in bodies:
        for way in ("words (now)", "whole chat (before)"):
            runs = router[name, way]
            lines.append(f"| {name} | {sizes[name]} KB | {spread(gateway[name])} | {way} | "
                         f"{spread([r[0] for r in runs])} | {spread([r[1] for r in runs])} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=30)
    args = parser.parse_args()
    table = asyncio.run(main_async(args.rounds, args.calls))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "agent_routing.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
