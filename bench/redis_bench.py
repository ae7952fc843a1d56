"""What callers and fleet-wide budgets cost a request: the gateway with no callers, with a caller's limits counted
in the process, and with them on Redis; in interleaved rounds.

    python -m bench.redis_bench [--seconds 5] [--rounds 3] [--concurrency 16]

Three local stacks (bench/stack.py: test upstream, 20 tokens a reply, ``gateway-service up``) side by side and a
real redis-server on loopback. The caller's policy has every limit that costs a Redis round trip: requests and
tokens per minute (a check each), a strong budget (a reservation, and its return when routed weak), and prices
(spend, sent in the background). Every prompt is new (``model=router``: a Route call each). Figures: time to
first token at c=1 (p50) and requests/s and gateway CPU per request at ``--concurrency``; the median of the rounds
with min-max. Results: bench/results/redis.{md,json}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import subprocess
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from bench.figures import spread
from bench.gateway_bench import RESULTS, p50, throughput, ttft_series
from bench.router_bench import free_port
from bench.stack import local_stack
from service_core.quota import Check, Counters, RedisSettings

KEY = "bench-caller-key-0001"
CALLER = f'''
[[callers]]
name = "bench"
api_keys = ["{KEY}"]
policy = "metered"

[[caller_policies]]
name = "metered"
strong_calls = 100000000
requests_per_minute = 100000000
tokens_per_minute = 1000000000

[[prices]]
model = "llama3.1:8b"
input_per_million = 0.2
output_per_million = 0.6
'''


def start_redis(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed: apt-get install redis-server")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return process, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("redis-server did not start")


async def counter_calls(counters: Counters, calls: int) -> tuple[float, float]:
    """Microseconds of wall time and of this process's CPU per request's checks (requests and tokens per minute,
    a strong reservation: what a metered caller's request makes), ``calls`` of them one after another."""
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(calls):
        caller = f"bench{i % 8}"
        await counters.take_all([
            Check(f"rpm:{caller}", 1, 10**12, 60.0), Check(f"tpm:{caller}", 0, 10**12, 60.0),
            Check(f"strong:{caller}", 1, 10**12, 3600.0, gate=False),
        ])
    return (time.perf_counter() - wall) * 1e6 / calls, (time.process_time() - cpu) * 1e6 / calls


def measure_counters(url: str, rounds: int, calls: int) -> dict[str, list[tuple[float, float]]]:
    """The checks a caller's request makes, alone: in the process against Redis on loopback, interleaved."""
    out: dict[str, list[tuple[float, float]]] = {"per process": [], "Redis": []}

    async def run() -> None:
        local, shared = Counters(RedisSettings()), Counters(RedisSettings(url=url, timeout_ms=1000))
        try:
            await counter_calls(shared, 200)  # connect, load the script
            for _ in range(rounds):
                out["per process"].append(await counter_calls(local, calls))
                out["Redis"].append(await counter_calls(shared, calls))
        finally:
            await shared.aclose()

    asyncio.run(run())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--calls", type=int, default=5000, help="counter checks a round, in the checks-alone part")
    args = parser.parse_args()

    targets = ("no callers", "caller, per process", "caller, Redis")
    ttfts: dict[str, list[float]] = {t: [] for t in targets}
    loads: dict[str, list[dict[str, float]]] = {t: [] for t in targets}
    headers = {"authorization": f"Bearer {KEY}"}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        folder = Path(tmp)
        redis, url = start_redis(folder)
        stack.callback(redis.kill)
        checks = measure_counters(url, args.rounds, args.calls)
        stacks = {}
        for i, (target, toml) in enumerate(zip(targets, ("", CALLER, f'{CALLER}\n[redis]\nurl = "{url}"\n'), strict=True)):
            (folder / str(i)).mkdir()
            stacks[target] = stack.enter_context(local_stack(folder / str(i), reply_tokens=20, gateway_toml=toml))
        for round_ in range(args.rounds):
            for target in targets:
                running = stacks[target]
                auth = headers if target != "no callers" else None
                ttfts[target].append(p50(asyncio.run(ttft_series(running.completions_url, "router", args.seconds, auth))))
                loads[target].append(asyncio.run(throughput(
                    running.completions_url, "router", args.concurrency, args.seconds, running.gateway.pid, auth
                )))
            print(f"round {round_ + 1}:", {t: (round(ttfts[t][-1], 3), round(loads[t][-1]["req_per_s"])) for t in targets},
                  flush=True)

    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    base_ttft, base_load = ttfts["no callers"], loads["no callers"]
    lines = [
        f"Callers and Redis benchmark ({time.strftime('%Y-%m-%d')}; {machine}); model=router, every prompt new, 20 "
        f"tokens a reply; median of {args.rounds} interleaved rounds (min-max)",
        "",
        f"| gateway | TTFT p50 ms, c=1 | added ms | requests/s, c={args.concurrency} | / no callers | "
        "gateway CPU ms per request | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for target in targets:
        added = [t - b for t, b in zip(ttfts[target], base_ttft, strict=True)]
        ratio = [r["req_per_s"] / b["req_per_s"] for r, b in zip(loads[target], base_load, strict=True)]
        lines.append(
            f"| {target} | {spread(ttfts[target])} | {spread(added, '{:+.2f}')} | "
            f"{spread([r['req_per_s'] for r in loads[target]], '{:.0f}')} | {spread(ratio)} | "
            f"{spread([r['cpu_ms_per_req'] for r in loads[target]])} | {sum(r['errors'] for r in loads[target])} |"
        )
    lines += [
        "",
        "- each request of the caller: two checks and a reservation before routing, in one Redis round trip (one Lua "
        "script); the reservation's return when routed weak is a second; spend and token counts go in the background",
        "",
        f"A request's checks alone (three counters in one call, {args.calls} one after another; Redis on loopback):",
        "",
        "| counters | wall us per request | CPU us per request (this process) |",
        "|---|---|---|",
        *(f"| {where} | {spread([w for w, _ in runs], '{:.1f}')} | {spread([c for _, c in runs], '{:.1f}')} |"
          for where, runs in checks.items()),
    ]
    report = "\n".join(lines)
    print(report)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "redis.md").write_text(report + "\n")
    (RESULTS / "redis.json").write_text(
        json.dumps({"machine": machine, "ttft_p50_ms": ttfts, "load": loads, "checks_us": checks}, indent=1)
    )


if __name__ == "__main__":
    main()
