"""Router under overload: goodput at 1x, 2x and 4x its capacity, with a bounded queue and without.

    python -m bench.overload_bench [--seconds 5] [--rounds 3] [--deadline 0.5]

Two routers run as their own processes, the default one (limits.max_queued_prompts = 1024)
and one with a short queue (64), both dropping work whose callers have gone. The capacity C
is measured first, in this run: routes per second at concurrency 64 on unique prompts.
Then calls arrive at a fixed rate (open loop, like independent clients) of 1x, 2x and 4x C,
each with the gateway's default deadline; goodput is the calls per second answered within
their deadline. Rounds alternate the two routers; each figure is the median of the rounds
with its spread (min-max). The load generator shares the machine's cores with the router:
read the ratios between the two routers, measured side by side, rather than absolutes.
Results: bench/results/overload.md.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from pathlib import Path

import grpc

from bench.figures import spread
from bench.router_bench import free_port, load, short_prompts, start_router
from router_service.adapters.local_embedder import LocalEmbedder
from router_service.config import LocalEmbedderSettings
from routing_api.router.v1 import router_pb2, router_pb2_grpc

RESULTS = Path(__file__).resolve().parent / "results"
CONFIGS = {
    "default queue (1024)": {"ROUTER_LIMITS__MAX_QUEUED_PROMPTS": "1024"},
    "short queue (64)": {"ROUTER_LIMITS__MAX_QUEUED_PROMPTS": "64"},
}
LEVELS = (1, 2, 4)


async def open_loop(address: str, prompts: list[str], rate: float, seconds: float, deadline: float) -> dict[str, float]:
    """Calls start every 1/rate s whatever happened to the earlier ones; outcomes by gRPC code."""
    outcomes: Counter[str] = Counter()
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(address) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)

        async def call(prompt: str) -> None:
            started = time.perf_counter()
            try:
                await stub.Route(router_pb2.RouteRequest(prompt=prompt), timeout=deadline)
            except grpc.aio.AioRpcError as exc:
                outcomes[exc.code().name] += 1
            else:
                outcomes["OK"] += 1
                latencies.append((time.perf_counter() - started) * 1e3)

        tasks = []
        begin = time.perf_counter()
        for i in range(int(rate * seconds)):
            delay = begin + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(call(prompts[i % len(prompts)])))
        await asyncio.gather(*tasks)
    latencies.sort()
    return {
        "goodput": outcomes["OK"] / seconds,
        "p50_ms": latencies[len(latencies) // 2] if latencies else float("nan"),
        "p99_ms": latencies[int(len(latencies) * 0.99)] if latencies else float("nan"),
        "shed": outcomes["RESOURCE_EXHAUSTED"] / max(1, sum(outcomes.values())),
        "late": outcomes["DEADLINE_EXCEEDED"] / max(1, sum(outcomes.values())),
    }



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--deadline", type=float, default=0.5, help="each call's deadline (the gateway's router.timeout_s)")
    args = parser.parse_args()
    prompts = short_prompts(LocalEmbedder(LocalEmbedderSettings()), 40_000)
    routers = {}
    for label, env in CONFIGS.items():
        port = free_port()
        routers[label] = (f"127.0.0.1:{port}", start_router(port, env=env))
    try:
        address = next(iter(routers.values()))[0]
        capacity = asyncio.run(load(address, prompts, 64, args.seconds))["per_s"]
        print(f"capacity C = {capacity:.0f} routes/s (concurrency 64, unique prompts)", flush=True)
        results: dict[tuple[str, int], list[dict[str, float]]] = {}
        offset = 0
        for _ in range(args.rounds):
            for level in LEVELS:
                for label, (addr, _) in routers.items():
                    # Fresh prompts every run: no cache, no single flight between runs.
                    chunk = prompts[offset:] + prompts[:offset]
                    offset = (offset + int(capacity * level * args.seconds)) % len(prompts)
                    result = asyncio.run(open_loop(addr, chunk, capacity * level, args.seconds, args.deadline))
                    results.setdefault((label, level), []).append(result)
                    print(label, f"{level}x", {k: round(v, 3) for k, v in result.items()}, flush=True)
    finally:
        for _, process in routers.values():
            process.terminate()
            process.wait(timeout=30)
    lines = [
        f"Capacity C = {capacity:.0f} routes/s; deadline {args.deadline * 1e3:.0f} ms; median of {args.rounds} rounds (min-max).",
        "",
        "| router | load | goodput, routes/s | goodput / C | p99 of answered, ms | shed (RESOURCE_EXHAUSTED) | late (DEADLINE_EXCEEDED) |",
        "|---|---|---|---|---|---|---|",
    ]
    for (label, level), runs in results.items():
        lines.append(
            f"| {label} | {level}x C | {spread([r['goodput'] for r in runs], '{:.0f}')} | "
            f"{spread([r['goodput'] / capacity for r in runs], '{:.2f}')} | {spread([r['p99_ms'] for r in runs], '{:.0f}')} | "
            f"{spread([r['shed'] for r in runs], '{:.0%}')} | {spread([r['late'] for r in runs], '{:.0%}')} |"
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "overload.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
