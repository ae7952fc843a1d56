"""What switching models mid-session costs: the prefill of the whole prompt, on a real llama.cpp server.

    python -m bench.session_prefill_bench [--rounds 5] [--tokens 2000 6000]

A model server keeps the prefix it last computed (llama.cpp: the KV cache of its slot; Ollama: one per loaded
model): the next turn of the same conversation only reads its new tokens. A session routed to another model
makes that model read the whole prompt, and when it comes back, the first model too (its cache now holds another
conversation). Here one llama.cpp server (llama-cpp-python, the end-to-end tests' tiny byte-level model,
tests/e2e/tiny_gguf.py, one thread) answers a conversation of N tokens, then the next user turn either straight
away (its prefix cached: a session that stays) or after another conversation took its cache (a switch). The time
to the first token of that turn is timed; interleaved rounds, a fresh conversation each, median (min-max).

The tiny model computes little per token, so read the ratio and the tokens re-read, not the milliseconds: a real
8B model prefills some hundreds to thousands of tokens a second on a GPU, tens on these CPUs.
Results: bench/results/session_prefill.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import string
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.figures import spread
from tests.e2e.llama_server import running_llama_server
from tests.e2e.tiny_gguf import write_tiny_gguf

RESULTS = Path(__file__).resolve().parent / "results"


def conversation(tokens: int, rng: random.Random) -> list[dict[str, Any]]:
    """About ``tokens`` tokens (the tiny model reads one a byte) of turns."""
    messages: list[dict[str, Any]] = []
    while sum(len(m["content"]) for m in messages) < tokens:
        words = " ".join("".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9))) for _ in range(60))
        messages += [{"role": "user", "content": words}, {"role": "assistant", "content": "ok"}]
    return messages


def first_token_ms(http: httpx.Client, url: str, messages: list[dict[str, Any]]) -> float:
    started = time.perf_counter()
    with http.stream("POST", f"{url}/v1/chat/completions", json={
        "model": "tiny", "messages": messages, "max_tokens": 2, "stream": True, "temperature": 0,
    }) as answer:
        answer.raise_for_status()
        for line in answer.iter_lines():
            if line.startswith("data: ") and '"content"' in line:
                return (time.perf_counter() - started) * 1e3
    return (time.perf_counter() - started) * 1e3



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, nargs="+", default=[2000, 6000])
    args = parser.parse_args()
    rng = random.Random(0)
    context = max(args.tokens) * 2 + 1024
    results: dict[int, dict[str, list[float]]] = {n: {"stays": [], "switched": []} for n in args.tokens}
    with tempfile.TemporaryDirectory() as scratch:
        model = Path(scratch) / "tiny.gguf"
        write_tiny_gguf(model, context=context)
        with running_llama_server(model, context=context) as url, httpx.Client(timeout=600) as http:
            first_token_ms(http, url, conversation(200, rng))  # warm the server up
            for _ in range(args.rounds):
                for tokens in args.tokens:
                    for way in ("stays", "switched"):
                        session = conversation(tokens, rng)
                        first_token_ms(http, url, session)  # the turn before: its prefix is now cached
                        if way == "switched":  # another conversation takes the cache, as another session would
                            first_token_ms(http, url, conversation(tokens, rng))
                        turn = [*session, {"role": "user", "content": "and now the next question, please"}]
                        results[tokens][way].append(first_token_ms(http, url, turn))
    lines = [
        f"# The prefill a model switch costs ({time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} CPUs; "
        f"llama.cpp via llama-cpp-python, the tiny byte-level model, 1 thread; {args.rounds} interleaved rounds, "
        "median (min-max))",
        "",
        "| conversation | next turn, the session stays: ms to first token | after a switch (whole prompt re-read) | ratio |",
        "|---|---|---|---|",
    ]
    for tokens, ways in results.items():
        ratio = statistics.median(ways["switched"]) / statistics.median(ways["stays"])
        lines.append(f"| ~{tokens} tokens | {spread(ways['stays'], '{:.0f}')} | {spread(ways['switched'], '{:.0f}')} | {ratio:.1f}x |")
    table = "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "session_prefill.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
