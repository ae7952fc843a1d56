"""Router benchmark: Route latency and throughput against the raw embedder, in interleaved rounds.

    python -m bench.router_bench [--seconds 8] [--rounds 3] [--concurrency 1 16 64] [--embedder local|static]

The router runs as its own process (``router-service serve``), as in production;
this process is the load generator. The physical baseline is measured here, in each
round: the raw ONNX embedder on one prompt (latency) and on batches (throughput), with
the router idle; then Route at each concurrency and RouteBatch. Every prompt is new (no
cache hits). Each figure is the median of the rounds with (min-max), and each ratio is
taken within a round. Figures are printed and written to bench/results/router.{md,json}
(router-static.* with ``--embedder static``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from bench.figures import spread
from router_service.adapters.local_embedder import LocalEmbedder
from router_service.adapters.static_embedder import StaticEmbedder
from router_service.config import LocalEmbedderSettings, StaticEmbedderSettings
from router_service.training.data import default_data_dir, read_jsonl
from routing_api.router.v1 import router_pb2, router_pb2_grpc

RESULTS = Path(__file__).resolve().parent / "results"


def short_prompts(embedder: LocalEmbedder, count: int, tokens: tuple[int, int] = (18, 24)) -> list[str]:
    """Real prompts of about 20 tokens from the eval data, each used once (no cache hits)."""
    out = []
    for path in sorted((default_data_dir() / "train").glob("*.jsonl.gz")):
        for row in read_jsonl(path):
            prompt = row["prompt"]
            if len(prompt) < 200 and tokens[0] <= len(embedder._tokenizer.encode(prompt).ids) <= tokens[1]:
                out.append(prompt)
    out = list(dict.fromkeys(out))
    if len(out) < count:
        out = [f"{p} (variant {i})" for i in range(count // len(out) + 1) for p in out]
    return out[:count]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def raw_embedder(embedder: LocalEmbedder | StaticEmbedder, prompts: list[str], seconds: float) -> dict[str, float]:
    for p in prompts[:20]:
        embedder.embed_sync([p])  # warm-up
    latencies, i = [], 0
    deadline = time.perf_counter() + seconds / 2
    while time.perf_counter() < deadline:
        t = time.perf_counter()
        embedder.embed_sync([prompts[i % len(prompts)]])
        latencies.append((time.perf_counter() - t) * 1e3)
        i += 1
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds / 2:
        batch = prompts[(done % len(prompts)) : (done % len(prompts)) + 32]
        embedder.embed_sync(batch)
        done += len(batch)
    return {
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "batched_per_s": done / (time.perf_counter() - started),
    }


async def load(address: str, prompts: list[str], concurrency: int, seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    counter = iter(range(10**9))
    async with grpc.aio.insecure_channel(address) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        await stub.Route(router_pb2.RouteRequest(prompt="warm up"), timeout=30)
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < deadline:
                prompt = prompts[next(counter) % len(prompts)]
                t = time.perf_counter()
                await stub.Route(router_pb2.RouteRequest(prompt=prompt), timeout=30)
                latencies.append((time.perf_counter() - t) * 1e3)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "per_s": len(latencies) / elapsed,
        "calls": len(latencies),
    }


async def load_batch(address: str, prompts: list[str], batch: int, seconds: float) -> float:
    done = 0
    async with grpc.aio.insecure_channel(address) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            chunk = prompts[(done % len(prompts)) : (done % len(prompts)) + batch]
            request = router_pb2.RouteBatchRequest(requests=[router_pb2.RouteRequest(prompt=p) for p in chunk])
            await stub.RouteBatch(request, timeout=60)
            done += len(chunk)
        return done / (time.perf_counter() - started)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_router(
    port: int, backend: str = "local", scorer: str | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    extra = env or {}
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTER_")} | extra
    # Every prompt is new, as on real traffic: no cache hits flatter the figures.
    env.update(
        ROUTER_SERVER__PORT=str(port), ROUTER_EMBEDDER__CACHE_SIZE="0", ROUTER_SERVER__LOG_LEVEL="WARNING",
        ROUTER_EMBEDDER__BACKEND=backend,
    )
    if scorer:
        env["ROUTER_SCORERS"] = json.dumps([{"name": scorer}])
    process = subprocess.Popen([sys.executable, "-m", "router_service", "serve"], env=env)
    deadline = time.time() + 60
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return process
        if process.poll() is not None:
            raise SystemExit("the router did not start")
        time.sleep(0.1)
    raise SystemExit("the router did not start within 60 s")


def plot(raw: dict[str, float], routes: dict[int, dict[str, float]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    levels = list(routes)
    left.bar([str(c) for c in levels], [routes[c]["per_s"] for c in levels], color="tab:blue", label="Route over gRPC")
    left.axhline(raw["batched_per_s"], color="grey", linestyle="--", label="raw embedder, batched")
    left.set_xlabel("concurrency")
    left.set_title("routes per second")
    left.legend()
    right.bar([str(c) for c in levels], [routes[c]["p50_ms"] for c in levels], label="p50")
    right.bar([str(c) for c in levels], [routes[c]["p99_ms"] - routes[c]["p50_ms"] for c in levels],
              bottom=[routes[c]["p50_ms"] for c in levels], alpha=0.5, label="p99")
    right.set_yscale("log")
    right.set_xlabel("concurrency")
    right.set_title("Route latency, ms")
    right.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; figures are their medians")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--embedder", choices=("local", "static"), default="local", help="the router's embedder backend")
    args = parser.parse_args()

    local = LocalEmbedder(LocalEmbedderSettings())
    prompts = short_prompts(local, 20000)
    tokens = statistics.mean(len(local._tokenizer.encode(p).ids) for p in prompts[:500])
    embedder = local if args.embedder == "local" else StaticEmbedder(StaticEmbedderSettings())
    rounds: list[dict[str, Any]] = []
    port = free_port()
    router = start_router(port, args.embedder)
    try:
        address = f"127.0.0.1:{port}"
        for i in range(args.rounds):
            # A new slice of prompts each round: nothing repeats, even across rounds.
            fresh = prompts[i::args.rounds]
            raw = raw_embedder(embedder, fresh, args.seconds)
            routes = {c: asyncio.run(load(address, fresh, c, args.seconds)) for c in args.concurrency}
            batch_rate = asyncio.run(load_batch(address, fresh, 64, args.seconds))
            rounds.append({"raw": raw, "route": routes, "route_batch_per_s": batch_rate})
            print(f"round {i + 1}: raw p50 {raw['p50_ms']:.2f} ms, batched {raw['batched_per_s']:.0f}/s;",
                  {c: round(r["per_s"]) for c, r in routes.items()}, f"batch {batch_rate:.0f}/s", flush=True)
    finally:
        router.terminate()
        router.wait(timeout=30)

    def figure(get: Any, fmt: str = "{:.2f}") -> str:
        return spread([get(r) for r in rounds], fmt)

    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    first = args.concurrency[0]
    lines = [
        f"Router benchmark, {args.embedder} embedder ({time.strftime('%Y-%m-%d')}; {machine}); "
        f"prompts of {tokens:.0f} tokens on average, no cache hits; median of {args.rounds} interleaved rounds (min-max)",
        "",
        "| what | p50 ms | p99 ms | per second |",
        "|---|---|---|---|",
        f"| raw embedder, one prompt (baseline) | {figure(lambda r: r['raw']['p50_ms'])} | "
        f"{figure(lambda r: r['raw']['p99_ms'])} | |",
        f"| raw embedder, batches of 32 (baseline) | | | {figure(lambda r: r['raw']['batched_per_s'], '{:.0f}')} |",
    ]
    for c in args.concurrency:
        lines.append(
            f"| Route over gRPC, concurrency {c} | {figure(lambda r, c=c: r['route'][c]['p50_ms'])} | "
            f"{figure(lambda r, c=c: r['route'][c]['p99_ms'])} | {figure(lambda r, c=c: r['route'][c]['per_s'], '{:.0f}')} |"
        )
    lines.append(f"| RouteBatch of 64 over gRPC | | | {figure(lambda r: r['route_batch_per_s'], '{:.0f}')} |")
    lines += [
        "",
        f"- Route p50 at concurrency {first} minus the raw embedder's p50: "
        f"{figure(lambda r: r['route'][first]['p50_ms'] - r['raw']['p50_ms'], '{:+.2f}')} ms",
        "- Route throughput (best concurrency) / raw batched embedder: "
        f"{figure(lambda r: max(x['per_s'] for x in r['route'].values()) / r['raw']['batched_per_s'])}",
        f"- RouteBatch throughput / raw batched embedder: {figure(lambda r: r['route_batch_per_s'] / r['raw']['batched_per_s'])}",
    ]
    report = "\n".join(lines)
    print(report)
    RESULTS.mkdir(exist_ok=True)
    stem = "router" if args.embedder == "local" else f"router-{args.embedder}"
    (RESULTS / f"{stem}.md").write_text(report + "\n")
    last = rounds[-1]
    plot(last["raw"], last["route"], RESULTS / f"{stem}.png")
    (RESULTS / f"{stem}.json").write_text(json.dumps({"machine": machine, "tokens": tokens, "rounds": rounds}, indent=2))


if __name__ == "__main__":
    main()
