"""What the gateway's upstream HTTP client costs: CPU per streamed request for the client stacks.

    python -m bench.upstream_client_bench [--seconds 5] [--rounds 3] [--concurrency 16]

The gateway reads every answer from its upstream through an HTTP client; a profile of the
gateway puts a sixth of its CPU there. This measures the candidates alone, in this process,
against the test upstream (Ollama's NDJSON, 20 tokens, a separate process): each stack
streams POST /api/chat from ``--concurrency`` workers over one pooled client, reads every
line and parses it, as the gateway does. CPU is this process's (time.process_time), so the
upstream's is not counted. Stacks, interleaved in each round:

- ``httpx``: httpx.AsyncClient with its own connection pool (httpcore);
- ``httpx+aiohttp``: httpx's API over aiohttp's pool (httpx-aiohttp, what the gateway shipped
  until 2026-12-02; measured only where that package is installed);
- ``aiohttp``: aiohttp.ClientSession directly: what the gateway ships.

Each figure is the median of the rounds with (min-max); ratios are to ``aiohttp`` in the
same round. Results: bench/results/upstream_client.md.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import httpx

from bench.figures import spread
from bench.router_bench import free_port
from bench.stack import ROOT, UPSTREAM_SCRIPT, clean_env

RESULTS = Path(__file__).resolve().parent / "results"
BODY = {"model": "llama3.1:8b", "messages": [{"role": "user", "content": "Say hello."}], "stream": True}

Stream = Callable[[], Awaitable[int]]  # one request: the number of content lines read


def httpx_stream(client: httpx.AsyncClient, url: str) -> Stream:
    async def one() -> int:
        lines = 0
        async with client.stream("POST", url, json=BODY) as response:
            async for line in response.aiter_lines():
                if line and not json.loads(line)["done"]:
                    lines += 1
        return lines

    return one


def aiohttp_stream(session: aiohttp.ClientSession, url: str) -> Stream:
    async def one() -> int:
        lines = 0
        async with session.post(url, json=BODY) as response:
            async for line in response.content:
                if line.strip() and not json.loads(line)["done"]:
                    lines += 1
        return lines

    return one


async def measure(one: Stream, concurrency: int, seconds: float) -> dict[str, float]:
    for _ in range(concurrency):  # warm the pool
        await one()
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            if await one() != 20:
                raise RuntimeError("a stream lost lines")
            done += 1

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {"cpu_ms": cpu * 1e3 / done, "req_per_s": done / wall}


async def one_round(url: str, concurrency: int, seconds: float) -> dict[str, dict[str, float]]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    out = {}
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        out["httpx"] = await measure(httpx_stream(client, url), concurrency, seconds)
    try:  # not a dependency any more: measured where it is installed
        transport = importlib.import_module("httpx_aiohttp").AiohttpTransport(limits=limits, trust_env=False)
    except ImportError:
        pass
    else:
        async with httpx.AsyncClient(transport=transport, timeout=30) as client:
            out["httpx+aiohttp"] = await measure(httpx_stream(client, url), concurrency, seconds)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        out["aiohttp"] = await measure(aiohttp_stream(session, url), concurrency, seconds)
    return out



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16], help="streams at once (the largest given)")
    args = parser.parse_args()
    args.concurrency = max(args.concurrency)  # `python -m bench` passes the other benches' lists too

    port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, "-c", UPSTREAM_SCRIPT, str(port), "20", "0"], cwd=ROOT, env=clean_env(),
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/api/chat"
    try:
        for _ in range(300):
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        rounds = []
        for i in range(args.rounds):
            rounds.append(asyncio.run(one_round(url, args.concurrency, args.seconds)))
            print(f"round {i + 1}:", {k: round(v["cpu_ms"], 3) for k, v in rounds[-1].items()}, flush=True)
    finally:
        upstream.terminate()
        upstream.wait(timeout=10)

    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    lines = [
        f"Upstream HTTP client ({time.strftime('%Y-%m-%d')}; {machine}); test upstream in Ollama's format, 20 "
        f"tokens; {args.concurrency} concurrent streams over one pooled client; median of {args.rounds} "
        "interleaved rounds (min-max)",
        "",
        "| client stack | CPU ms per streamed request | / aiohttp (shipped) | requests/s |",
        "|---|---|---|---|",
    ]
    for stack in rounds[0]:
        cpu = [r[stack]["cpu_ms"] for r in rounds]
        ratio = [r[stack]["cpu_ms"] / r["aiohttp"]["cpu_ms"] for r in rounds]
        rate = [r[stack]["req_per_s"] for r in rounds]
        lines.append(f"| {stack} | {spread(cpu)} | {spread(ratio)} | {spread(rate, '{:.0f}')} |")
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "upstream_client.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
