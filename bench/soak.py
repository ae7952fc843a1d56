"""A bounded soak: many concurrent streams through the gateway for a fixed time, with random faults.

    python -m bench.soak [--seconds 120] [--concurrency 1000] [--chaos 0.05]

Real processes: a fast test upstream in Ollama's format that fails a share of
requests at random (HTTP 500, or a cut after the first chunk), `gateway-service up`
(router + gateway), and this load generator. Reports requests, outcomes by kind,
time-to-first-token p50/p99, and the gateway process's memory at start and end.
tests/gateway/test_soak.py runs a short version in CI.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from bench.stack import local_stack

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


@dataclass
class SoakResult:
    requests: int = 0
    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    ttft_ms: list[float] = field(default_factory=list)
    rss_start_mb: float = 0.0
    rss_end_mb: float = 0.0
    seconds: float = 0.0

    def summary(self) -> dict[str, object]:
        return {
            "requests": self.requests, "outcomes": dict(self.outcomes), "seconds": round(self.seconds, 1),
            "ttft_p50_ms": round(float(np.percentile(self.ttft_ms, 50)), 2) if self.ttft_ms else None,
            "ttft_p99_ms": round(float(np.percentile(self.ttft_ms, 99)), 2) if self.ttft_ms else None,
            "rss_start_mb": round(self.rss_start_mb, 1), "rss_end_mb": round(self.rss_end_mb, 1),
        }


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def one(client: httpx.AsyncClient, url: str, body: dict, result: SoakResult) -> None:
    started = time.perf_counter()
    first = None
    try:
        async with client.stream("POST", url, json=body) as response:
            if response.status_code != 200:
                result.outcomes[f"http {response.status_code}"] += 1
                await response.aread()
                return
            last = ""
            async for line in response.aiter_lines():
                if first is None and '"content":"' in line and '"content":""' not in line:
                    first = time.perf_counter()
                if line:
                    last = line
            fallback = response.headers.get("x-route-fallback") == "true"
            if last == "data: [DONE]":
                result.outcomes["ok (fallback)" if fallback else "ok"] += 1
            elif last.startswith('data: {"error"'):
                result.outcomes["terminal error event"] += 1
            else:
                result.outcomes["truncated without an error"] += 1  # must never happen
    except httpx.HTTPError as exc:
        result.outcomes[f"client {type(exc).__name__}"] += 1
    finally:
        result.requests += 1
        if first is not None:
            result.ttft_ms.append((first - started) * 1e3)


async def load(url: str, concurrency: int, seconds: float, result: SoakResult) -> None:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    body = {"model": "llama3.1:8b", "messages": [{"role": "user", "content": "hello"}], "stream": True}
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < deadline:
                await one(client, url, body, result)

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def run_soak(seconds: float, concurrency: int, chaos: float) -> SoakResult:
    # The fallback (llama3.2:1b) lives on the same faulty upstream, so some requests
    # fail twice and must end in a clear error, not a hang.
    limits = f"[limits]\nmax_streams = {concurrency * 2}\nmax_streams_per_key = {concurrency * 2}\n"
    with tempfile.TemporaryDirectory() as tmp, local_stack(Path(tmp), reply_tokens=10, chaos=chaos, gateway_toml=limits) as stack:
        url = stack.completions_url
        asyncio.run(load(url, min(concurrency, 50), 2.0, SoakResult()))  # warm-up: imports, pools, caches
        result = SoakResult(rss_start_mb=rss_mb(stack.gateway.pid))
        started = time.perf_counter()
        asyncio.run(load(url, concurrency, seconds, result))
        result.seconds = time.perf_counter() - started
        result.rss_end_mb = rss_mb(stack.gateway.pid)
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--concurrency", type=int, default=1000)
    parser.add_argument("--chaos", type=float, default=0.05, help="share of upstream requests that fail")
    args = parser.parse_args()
    summary = run_soak(args.seconds, args.concurrency, args.chaos).summary()
    print(json.dumps(summary, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "soak.json").write_text(json.dumps({**vars(args), **summary}, indent=2))


if __name__ == "__main__":
    main()
