"""Coding agents' requests through the gateway: what translating them costs, and whether the event loop stalls.

    python -m bench.agents_bench [--rounds 5] [--requests 40]

Bodies: the largest recorded request of Claude Code 2.1.328 (Anthropic Messages) and of Codex 0.169.0
(OpenAI Responses) from ../shared/clients, each also grown to ~400 KB by repeating its tool loop (a call
and a 4 KB result per turn), and beside each the same conversation as a chat-completions body (the
baseline path).

1. Translation, in process: parse (JSON, schema, domain) and render for an Ollama and an OpenAI-compatible
   upstream, CPU ms per request and per 100 KB of body; interleaved rounds, median (min-max).
2. Through the gateway (`gateway-service up`, a concrete model so no Route call is timed; the Ollama-format
   test upstream answers 20 tokens): gateway CPU ms per request for each API, interleaved, and the event
   loop's stalls while 1 and 8 streams at a time run (the gateway's own gateway_event_loop_lag_seconds).

Targets (issue 34): under 1 ms CPU per 100 KB of body; no stall over 20 ms. Results: bench/results/agents.md.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from bench.figures import spread
from bench.gateway_bench import cpu_seconds
from bench.stack import local_stack
from gateway_service.apis.anthropic_wire import MessagesRequest
from gateway_service.apis.openai_responses_wire import ResponsesRequest
from gateway_service.apis.openai_wire import ChatCompletionRequest
from gateway_service.upstreams.ollama import ollama_body
from gateway_service.upstreams.openai import openai_body, openai_messages

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = ROOT.parent / "shared" / "clients"
RESULTS = Path(__file__).resolve().parent / "results"
MODEL = "llama3.1:8b"
PATHS = {"anthropic": "/v1/messages", "responses": "/v1/responses", "chat": "/v1/chat/completions"}
SCHEMAS: dict[str, Any] = {"anthropic": MessagesRequest, "responses": ResponsesRequest, "chat": ChatCompletionRequest}


def largest(folder: str) -> dict[str, Any]:
    lines = (CLIENTS / folder / "requests.jsonl").read_text().splitlines()
    return max((json.loads(line)["body"] for line in lines), key=lambda b: len(json.dumps(b)))


def grown(body: dict[str, Any], api: str, size: int = 400_000) -> dict[str, Any]:
    """The conversation continued turn after turn (a tool call, a 4 KB result) until the body is ``size`` bytes."""
    body = copy.deepcopy(body)
    output = ("drwxr-xr-x  src/\n-rw-r--r--  hello.py  42 bytes\n" * 80)[:4000]
    turn = 0
    while len(json.dumps(body)) < size:
        turn += 1
        if api == "anthropic":
            body["messages"] += [
                {"role": "assistant", "content": [{"type": "tool_use", "id": f"toolu_{turn}", "name": "Bash",
                                                   "input": {"command": f"ls -la dir{turn}"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"toolu_{turn}", "content": output}]},
            ]
        else:
            body["input"] += [
                {"type": "function_call", "call_id": f"call_{turn}", "name": "exec_command",
                 "arguments": json.dumps({"cmd": f"ls -la dir{turn}"})},
                {"type": "function_call_output", "call_id": f"call_{turn}", "output": output},
            ]
    return body


def as_chat(api: str, body: dict[str, Any]) -> dict[str, Any]:
    """The same conversation as an OpenAI chat-completions request (the path that existed before)."""
    params = SCHEMAS[api].model_validate(body).params()
    tools = [{"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}
             for t in params.tools]
    return {"model": body["model"], "stream": True, "tools": tools,
            "messages": [wire for m in params.messages for wire in openai_messages(m)]}


def translate(api: str, raw: bytes) -> None:
    """What the gateway does with a body before the upstream sees it: parse, check, render for each upstream kind."""
    params = SCHEMAS[api].model_validate(orjson.loads(raw)).params()
    orjson.dumps(ollama_body(MODEL, params))
    orjson.dumps(openai_body(MODEL, params))


def bodies() -> dict[str, tuple[str, bytes]]:
    """name -> (api, bytes)."""
    claude, codex = largest("claude-code-2.1.328"), largest("codex-0.169.0")
    found: dict[str, tuple[str, bytes]] = {}
    for name, api, body in (("Claude Code", "anthropic", claude), ("Codex", "responses", codex)):
        for label, sized in (("recorded", body), ("grown", grown(body, api))):
            sized = {**sized, "model": MODEL}
            found[f"{name} {label}"] = (api, orjson.dumps(sized))
            found[f"{name} {label}, as chat"] = ("chat", orjson.dumps({**as_chat(api, sized), "model": MODEL}))
    return found


def cpu_ms(api: str, raw: bytes, repeat: int) -> float:
    started = time.process_time()
    for _ in range(repeat):
        translate(api, raw)
    return (time.process_time() - started) / repeat * 1e3


async def gateway_cpu(url: str, api: str, raw: bytes, requests: int, pid: int) -> float:
    async with httpx.AsyncClient(timeout=60) as http:
        await http.post(url + PATHS[api], content=raw, headers={"content-type": "application/json"})  # warm
        before = cpu_seconds(pid)
        for _ in range(requests):
            answer = await http.post(url + PATHS[api], content=raw, headers={"content-type": "application/json"})
            answer.raise_for_status()
        return (cpu_seconds(pid) - before) / requests * 1e3


def lag_buckets(url: str) -> dict[float, float]:
    """The gateway's gateway_event_loop_lag_seconds histogram: upper bound -> samples at or below it."""
    text = httpx.get(url + "/metrics", timeout=10).text
    return {float(sample.labels["le"]): sample.value
            for family in text_string_to_metric_families(text) if family.name == "gateway_event_loop_lag_seconds"
            for sample in family.samples if sample.name.endswith("_bucket")}


def lag_summary(before: dict[float, float], after: dict[float, float]) -> tuple[float, float]:
    """(share of the loop's timer wake-ups more than 20 ms late, the smallest bound every wake-up was within, ms)."""
    delta = {le: after[le] - before.get(le, 0.0) for le in after}
    total = delta[float("inf")]
    late = total - delta[0.02]
    within = min(le for le, n in delta.items() if n == total)
    return late / total if total else 0.0, within * 1e3


async def stream_load(url: str, load: list[tuple[str, bytes]], seconds: float, at_once: int) -> int:
    """``at_once`` streams at a time of the given bodies for ``seconds``; how many ran."""
    async with httpx.AsyncClient(timeout=60) as http:
        async def one(i: int) -> None:
            api, raw = load[i % len(load)]
            async with http.stream("POST", url + PATHS[api], content=raw, headers={"content-type": "application/json"}) as r:
                r.raise_for_status()
                async for _ in r.aiter_bytes():
                    pass

        deadline, done = time.perf_counter() + seconds, 0
        while time.perf_counter() < deadline:
            await asyncio.gather(*(one(done + k) for k in range(at_once)))
            done += at_once
    return done



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=20, help="translations of each body a round")
    parser.add_argument("--requests", type=int, default=40, help="requests of each body a round, through the gateway")
    parser.add_argument("--seconds", type=float, default=5.0, help="of streaming while the stall probe runs")
    args = parser.parse_args()
    found = bodies()
    translation: dict[str, list[float]] = {name: [] for name in found}
    for round_ in range(args.rounds):
        for name, (api, raw) in found.items():
            translation[name].append(cpu_ms(api, raw, args.repeat))
        print(f"round {round_ + 1}: translation ms", {n: round(v[-1], 3) for n, v in translation.items()}, flush=True)

    through: dict[str, list[float]] = {name: [] for name in found}
    with tempfile.TemporaryDirectory() as tmp, local_stack(Path(tmp), reply_tokens=20) as stack:
        url = f"http://127.0.0.1:{stack.http_port}"
        for round_ in range(args.rounds):
            for name, (api, raw) in found.items():
                through[name].append(asyncio.run(gateway_cpu(url, api, raw, args.requests, stack.gateway.pid)))
            print(f"round {round_ + 1}: gateway CPU ms", {n: round(v[-1], 2) for n, v in through.items()}, flush=True)
        loads = {"agents": [found[n] for n in found if not n.endswith("as chat")],
                 "chat": [found[n] for n in found if n.endswith("as chat")]}
        runs = [(name, c) for c in (1, 8) for name in loads]
        lags: dict[tuple[str, int], list[tuple[float, float]]] = {run: [] for run in runs}
        for _ in range(args.rounds):
            for name, c in runs:
                before = lag_buckets(url)
                asyncio.run(stream_load(url, loads[name], args.seconds, c))
                lags[(name, c)].append(lag_summary(before, lag_buckets(url)))

    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    lines = [
        f"Agent bodies through the gateway ({time.strftime('%Y-%m-%d')}; {machine}); median of {args.rounds} "
        "interleaved rounds (min-max)",
        "",
        "| body | KB | translation CPU ms | ms per 100 KB | gateway CPU ms per request (20-token answer) |",
        "|---|---|---|---|---|",
    ]
    for name, (_, raw) in found.items():
        per_100 = [v / (len(raw) / 100_000) for v in translation[name]]
        lines.append(f"| {name} | {len(raw) / 1000:.0f} | {spread(translation[name])} | {spread(per_100)} | "
                     f"{spread(through[name])} |")
    lines += [
        "",
        f"While streams ran ({args.seconds:g} s a round; the recorded and grown bodies, and the same conversations as "
        "chat completions):",
        "",
        "| load | streams at once | loop wake-ups > 20 ms late | every wake-up within ms |",
        "|---|---|---|---|",
        *(f"| {'Messages + Responses' if name == 'agents' else 'chat completions (baseline)'} | {c} | "
          f"{spread([100 * lag[0] for lag in lags[(name, c)]], '{:.1f}')} % | "
          f"{spread([lag[1] for lag in lags[(name, c)]], '{:.0f}')} |"
          for name, c in runs),
        "",
        "- the gateway's own loop watch, gateway_event_loop_lag_seconds: how late a 50 ms timer fires (a bucket bound:",
        "  'within 5' means every wake-up was under 5 ms late); gateway, upstream and load generator share 2 cores.",
        "- translation: JSON parse, schema, domain, and rendering for both upstream kinds (Ollama, OpenAI-compatible);",
        "  the gateway CPU column adds the HTTP server, the upstream stream and the answer's events.",
    ]
    report = "\n".join(lines)
    print(report)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "agents.md").write_text(report + "\n")


if __name__ == "__main__":
    main()
