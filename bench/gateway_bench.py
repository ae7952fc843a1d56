"""Gateway benchmark: added time to first token, throughput and CPU per request, in interleaved rounds.

    python -m bench.gateway_bench [--seconds 5] [--rounds 3] [--concurrency 1 16 64] [--streams 1000]

Three processes, as in production: a test upstream speaking Ollama's /api/chat NDJSON
(no delay, 20 tokens a reply), ``gateway-service up`` (router + gateway in one process)
and this load generator. Each round measures, one after the other: the upstream asked
directly (the baseline), the gateway with a concrete model (no Route call), and the
gateway with ``model=router`` (a Route call per request). Every request's prompt is new,
so the router's cache never answers. Each load worker has its own HTTP client and
connection (a shared pool would be the bottleneck, not the gateway). CPU per request is
the gateway process's user+system time over the requests it served (from /proc).
Each figure is the median of the rounds, with min-max. Results: bench/results/gateway.{md,json}.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from bench.figures import spread
from bench.stack import local_stack

RESULTS = Path(__file__).resolve().parent / "results"
MODEL = "llama3.1:8b"
MARKER = b'"content":"tok'  # a content chunk, in either wire format
_unique = itertools.count()


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


def body(model: str) -> dict:
    """A request whose prompt no earlier request had: no cache hit, no single flight."""
    return {"model": model, "stream": True,
            "messages": [{"role": "user", "content": f"What is the capital of France? (question {next(_unique)})"}]}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def ttft(client: httpx.AsyncClient, url: str, model: str) -> float:
    """Seconds to the first chunk that carries content (the rest of the stream is read too)."""
    started = time.perf_counter()
    first = None
    async with client.stream("POST", url, json=body(model)) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if first is None and MARKER in line.encode():
                first = time.perf_counter() - started
    if first is None:
        raise RuntimeError("no content chunk")
    return first


async def ttft_series(url: str, model: str, seconds: float, headers: dict[str, str] | None = None) -> list[float]:
    out = []
    async with httpx.AsyncClient(timeout=30, headers=headers) as client:
        for _ in range(20):
            await ttft(client, url, model)  # warm-up
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            out.append(await ttft(client, url, model) * 1e3)
    return out


async def throughput(
    url: str, model: str, concurrency: int, seconds: float, pid: int | None, headers: dict[str, str] | None = None
) -> dict[str, float]:
    chunks = errors = streams = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal chunks, errors, streams
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(timeout=60, limits=limits, headers=headers) as client:  # one client + connection each
            while time.perf_counter() < deadline:
                try:
                    async with client.stream("POST", url, json=body(model)) as response:
                        response.raise_for_status()
                        async for line in response.aiter_lines():
                            if MARKER in line.encode():
                                chunks += 1
                    streams += 1
                except httpx.HTTPError:
                    errors += 1

    cpu_before = cpu_seconds(pid) if pid else 0.0
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    cpu = cpu_seconds(pid) - cpu_before if pid else float("nan")
    return {"req_per_s": streams / elapsed, "chunks_per_s": chunks / elapsed, "errors": errors,
            "cpu_ms_per_req": cpu * 1e3 / max(streams, 1), "cores": cpu / elapsed}


async def burst(url: str, streams: int) -> dict[str, float]:
    """``streams`` streams opened at once; every one must finish with all its chunks."""
    limits = httpx.Limits(max_connections=streams, max_keepalive_connections=streams)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def one() -> bool:
            try:
                async with client.stream("POST", url, json=body(MODEL)) as response:
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



def p50(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--streams", type=int, default=1000)
    args = parser.parse_args()

    targets = ("direct", "gateway", "routed")
    ttfts: dict[str, list[float]] = {t: [] for t in targets}  # p50 of each round
    loads: dict[tuple[str, int], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp, local_stack(Path(tmp), reply_tokens=20) as stack:
        urls = {"direct": f"http://127.0.0.1:{stack.upstream_port}/api/chat", "gateway": stack.completions_url,
                "routed": stack.completions_url}
        models = {"direct": MODEL, "gateway": MODEL, "routed": "router"}
        pids = {"direct": None, "gateway": stack.gateway.pid, "routed": stack.gateway.pid}
        for round_ in range(args.rounds):
            for target in targets:
                series = asyncio.run(ttft_series(urls[target], models[target], args.seconds))
                ttfts[target].append(p50(series))
            for c in args.concurrency:
                for target in targets:
                    result = asyncio.run(throughput(urls[target], models[target], c, args.seconds, pids[target]))
                    loads.setdefault((target, c), []).append(result)
            print(f"round {round_ + 1}: TTFT p50 ms", {t: round(v[-1], 3) for t, v in ttfts.items()},
                  {f"{t}@{c}": round(r[-1]["req_per_s"]) for (t, c), r in loads.items()}, flush=True)
        many = asyncio.run(burst(urls["gateway"], args.streams))

    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    added = [g - d for g, d in zip(ttfts["gateway"], ttfts["direct"], strict=True)]
    route = [r - g for r, g in zip(ttfts["routed"], ttfts["gateway"], strict=True)]
    lines = [
        f"Gateway benchmark ({time.strftime('%Y-%m-%d')}; {machine}); upstream: Ollama-format test server, 20 tokens, "
        f"no delay; median of {args.rounds} interleaved rounds (min-max); every prompt new",
        "",
        "| time to first token, c=1 | p50 ms |",
        "|---|---|",
        f"| direct to the upstream (baseline) | {spread(ttfts['direct'])} |",
        f"| through the gateway, concrete model | {spread(ttfts['gateway'])} |",
        f"| through the gateway, model=router (a Route call on a new prompt) | {spread(ttfts['routed'])} |",
        "",
        f"- added by the gateway (p50, Route excluded): {spread(added, '{:+.2f}')} ms",
        f"- the Route call (p50, routed minus concrete): {spread(route, '{:+.2f}')} ms",
        "",
        "| concurrency | target | requests/s | / direct | gateway CPU ms per request | gateway cores | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in args.concurrency:
        direct = loads[("direct", c)]
        for target in targets:
            runs = loads[(target, c)]
            ratio = [r["req_per_s"] / d["req_per_s"] for r, d in zip(runs, direct, strict=True)]
            cpu = "" if target == "direct" else spread([r["cpu_ms_per_req"] for r in runs])
            cores = "" if target == "direct" else spread([r["cores"] for r in runs])
            lines.append(
                f"| {c} | {target} | {spread([r['req_per_s'] for r in runs], '{:.0f}')} | {spread(ratio)} | {cpu} | "
                f"{cores} | {sum(r['errors'] for r in runs)} |"
            )
    lines += [
        "",
        f"- {many['streams']} streams opened at once through the gateway: {many['errors']} errors, "
        f"all done in {many['seconds']:.1f} s",
        "- upstream, gateway and load generator share the machine's cores: read ratios to the direct baseline",
        "  measured in the same round, not absolutes.",
    ]
    report = "\n".join(lines)
    print(report)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gateway.md").write_text(report + "\n")
    (RESULTS / "gateway.json").write_text(json.dumps(
        {"machine": machine, "ttft_p50_ms": ttfts, "burst": many,
         "throughput": {f"{t}@{c}": runs for (t, c), runs in loads.items()}}, indent=1))


if __name__ == "__main__":
    main()
