"""Gateway benchmark: added time to first token, chunk throughput, 1,000 concurrent streams.

    python -m bench.gateway_bench [--seconds 6] [--concurrency 1 64 512] [--streams 1000]

Three processes, as in production: a test upstream speaking Ollama's /api/chat
NDJSON (no delay, 20 tokens a reply), ``gateway-service up`` (router + gateway),
and this load generator. The baseline is the same upstream asked directly, in
the same run. Added latency uses a concrete model (no Route call); the Route
call is reported on its own as the TTFT difference between ``router`` and a
concrete model. Figures go to bench/results/gateway.{md,json}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from bench.stack import local_stack

RESULTS = Path(__file__).resolve().parent / "results"
MODEL = "llama3.1:8b"


def wait_http(url: str, process: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{process.args!r} exited")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not come up")


async def ttft(client: httpx.AsyncClient, url: str, body: dict, first_marker: bytes) -> float:
    """Seconds to the first chunk that carries content."""
    started = time.perf_counter()
    async with client.stream("POST", url, json=body) as response:
        response.raise_for_status()
        lines = response.aiter_lines()
        async for line in lines:
            if first_marker in line.encode():
                elapsed = time.perf_counter() - started
                async for _ in lines:  # drain the rest of the stream
                    pass
                return elapsed
    raise RuntimeError("no content chunk")


async def ttft_series(url: str, body: dict, marker: bytes, seconds: float) -> list[float]:
    out = []
    async with httpx.AsyncClient(timeout=30) as client:
        for _ in range(20):
            await ttft(client, url, body, marker)  # warm-up
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            out.append(await ttft(client, url, body, marker) * 1e3)
    return out


async def throughput(url: str, body: dict, concurrency: int, seconds: float) -> dict[str, float]:
    chunks = errors = streams = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal chunks, errors, streams
            while time.perf_counter() < deadline:
                try:
                    async with client.stream("POST", url, json=body) as response:
                        response.raise_for_status()
                        async for line in response.aiter_lines():
                            if '"content":"tok' in line:  # a content chunk, in either wire format
                                chunks += 1
                    streams += 1
                except httpx.HTTPError:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"chunks_per_s": chunks / elapsed, "streams_per_s": streams / elapsed, "errors": errors, "streams": streams}


async def burst(url: str, body: dict, streams: int) -> dict[str, float]:
    """``streams`` streams opened at once; every one must finish with all its chunks."""
    limits = httpx.Limits(max_connections=streams, max_keepalive_connections=streams)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def one() -> bool:
            try:
                async with client.stream("POST", url, json=body) as response:
                    if response.status_code != 200:
                        return False
                    text = "".join([line async for line in response.aiter_lines()])
                    return text.count('"content":"tok') == 20 and text.endswith("data: [DONE]")
            except httpx.HTTPError:
                return False

        started = time.perf_counter()
        results = await asyncio.gather(*(one() for _ in range(streams)))
        elapsed = time.perf_counter() - started
    return {"streams": streams, "errors": results.count(False), "seconds": elapsed}


def plot(ttfts: dict[str, list[float]], loads: dict, direct_loads: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    left.boxplot(list(ttfts.values()), showfliers=False)
    left.set_xticks(range(1, len(ttfts) + 1), list(ttfts))
    left.set_title("time to first token, ms")
    levels = [str(c) for c in loads]
    x = np.arange(len(levels))
    right.bar(x - 0.2, [direct_loads[c]["chunks_per_s"] for c in loads], 0.4, label="direct (baseline)")
    right.bar(x + 0.2, [loads[c]["chunks_per_s"] for c in loads], 0.4, label="through the gateway")
    right.set_xticks(x, levels)
    right.set_xlabel("concurrent streams")
    right.set_title("chunks per second")
    right.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 64, 512])
    parser.add_argument("--streams", type=int, default=1000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, local_stack(Path(tmp), reply_tokens=20) as stack:
        direct_url = f"http://127.0.0.1:{stack.upstream_port}/api/chat"
        gateway_url = stack.completions_url
        messages = [{"role": "user", "content": "What is the capital of France?"}]
        direct_body = {"model": MODEL, "messages": messages, "stream": True}
        concrete_body = {"model": MODEL, "messages": messages, "stream": True}
        routed_body = {"model": "router", "messages": messages, "stream": True}

        direct = asyncio.run(ttft_series(direct_url, direct_body, b'"content":"tok', args.seconds))
        through = asyncio.run(ttft_series(gateway_url, concrete_body, b'"content":"tok', args.seconds))
        routed = asyncio.run(ttft_series(gateway_url, routed_body, b'"content":"tok', args.seconds))
        loads = {c: asyncio.run(throughput(gateway_url, concrete_body, c, args.seconds)) for c in args.concurrency}
        direct_loads = {c: asyncio.run(throughput(direct_url, direct_body, c, args.seconds)) for c in args.concurrency}
        many = asyncio.run(burst(gateway_url, concrete_body, args.streams))

    p50 = lambda xs: float(np.percentile(xs, 50))  # noqa: E731
    p99 = lambda xs: float(np.percentile(xs, 99))  # noqa: E731
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    lines = [
        f"Gateway benchmark ({time.strftime('%Y-%m-%d')}; {machine}); upstream: Ollama-format test server, 20 tokens, no delay",
        "",
        "| time to first token | p50 ms | p99 ms |",
        "|---|---|---|",
        f"| direct to the upstream (baseline) | {p50(direct):.2f} | {p99(direct):.2f} |",
        f"| through the gateway, concrete model | {p50(through):.2f} | {p99(through):.2f} |",
        f"| through the gateway, model=router (Route call included) | {p50(routed):.2f} | {p99(routed):.2f} |",
        "",
        f"- added by the gateway (p50, Route excluded): {p50(through) - p50(direct):+.2f} ms",
        f"- the Route call (p50, routed minus concrete): {p50(routed) - p50(through):+.2f} ms",
        "",
        "| concurrent streams | direct chunks/s (baseline) | gateway chunks/s | ratio | gateway streams/s | errors |",
        "|---|---|---|---|---|---|",
    ]
    for c, r in loads.items():
        d = direct_loads[c]
        lines.append(
            f"| {c} | {d['chunks_per_s']:.0f} | {r['chunks_per_s']:.0f} | {r['chunks_per_s'] / d['chunks_per_s']:.2f} "
            f"| {r['streams_per_s']:.0f} | {r['errors'] + d['errors']} |"
        )
    lines += [
        "",
        f"- {many['streams']} streams opened at once through the gateway: {many['errors']} errors, "
        f"all done in {many['seconds']:.1f} s",
        "- one load-generator process drives every stream (httpx), so at high concurrency the client, not the",
        "  gateway, sets the pace: compare each row with its direct baseline, not rows with each other.",
    ]
    report = "\n".join(lines)
    print(report)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gateway.md").write_text(report + "\n")
    plot({"direct": direct, "gateway": through, "gateway + Route": routed}, loads, direct_loads, RESULTS / "gateway.png")
    (RESULTS / "gateway.json").write_text(json.dumps(
        {"machine": machine, "ttft_ms": {"direct": direct, "gateway": through, "routed": routed},
         "throughput": loads, "direct_throughput": direct_loads, "burst": many}, indent=1))


if __name__ == "__main__":
    main()
