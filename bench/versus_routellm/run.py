"""Side by side with RouteLLM 0.2.0's MF router: same prompts, same embedder, same weights, interleaved rounds.

    python -m bench.versus_routellm.run [--seconds 8] [--rounds 3] [--concurrency 1 32]

1. A throwaway virtualenv (bench/versus_routellm/.venv, not committed, never the
   project's) gets routellm==0.2.0 with --no-deps, CPU torch 2.13.0 and only what
   its MF router imports.
2. Our embedder is served over an OpenAI-compatible /v1/embeddings on loopback, and
   RouteLLM's client is pointed at it (OPENAI_BASE_URL): both routers embed with
   all-MiniLM-L6-v2.
3. Our bundled scorer's weights are loaded into RouteLLM's MFModel; both routers
   must give the same win rate to 1e-5 (the ONNX export is faithful).
4. Measured in each round on the same real prompts (MMLU questions, a fresh slice each
   round, no cache hits): RouteLLM's calculate_strong_win_rate as its server calls it,
   our Route RPC over gRPC, our engine in-process, and the raw embedder (batched) as the
   ceiling; then time to first token through RouteLLM's server and through our gateway.
   Each figure is the median of the rounds with (min-max); ratios are taken within a round.
Writes bench/results/versus_routellm.{md,json,png}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from bench.figures import spread
from bench.gateway_bench import ttft_series, wait_http
from bench.router_bench import free_port, load, raw_embedder, start_router
from bench.stack import UPSTREAM_SCRIPT
from router_service.adapters.scorer import OnnxScorer
from router_service.config import BUNDLED_SCORERS, RouterSettings
from router_service.domain import RouteQuery
from router_service.engine import open_engine
from router_service.mf import sigmoid
from router_service.training.data import default_data_dir, read_jsonl

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
RESULTS = ROOT / "bench" / "results"
VENV = HERE / ".venv"
ROUTELLM_DEPS = [
    "torch==2.13.0", "numpy", "pandas", "scikit-learn", "openai", "huggingface_hub", "transformers<5.4",
    "datasets", "pyyaml", "pydantic", "tqdm",
    # its openai_server: FastAPI + litellm (offline with LITELLM_LOCAL_MODEL_COST_MAP=True)
    "litellm", "fastapi", "shortuuid", "uvicorn",
]
EMBEDDING_SERVER = """
import sys, uvicorn
from router_service.adapters.local_embedder import LocalEmbedder
from router_service.config import LocalEmbedderSettings
from tests.http_servers import EmbeddingServerState, embedding_app
embedder = LocalEmbedder(LocalEmbedderSettings())
state = EmbeddingServerState(embed=embedder.embed_sync, model="text-embedding-3-small")
uvicorn.run(embedding_app(state), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
"""


def ensure_venv() -> Path:
    python = VENV / "bin" / "python"
    marker = VENV / ".ready"
    if not marker.exists():
        print("building the RouteLLM virtualenv (once):", " ".join(ROUTELLM_DEPS), flush=True)
        venv.create(VENV, with_pip=True, clear=True)
        subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "routellm==0.2.0"], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", *ROUTELLM_DEPS], check=True)
        marker.touch()
    return python


def export_weights(path: Path) -> tuple[dict[str, np.ndarray], OnnxScorer]:
    """Our scorer's weights in RouteLLM's MFModel layout."""
    model = onnx.load(str(BUNDLED_SCORERS["mf"]["local"]))
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    scorer = OnnxScorer("mf", BUNDLED_SCORERS["mf"]["local"])
    weights = {
        "P": np.ascontiguousarray(init["model_vectors"].T),  # unit rows; MFModel normalises again, a no-op
        "W": np.ascontiguousarray(init["projection"].T),  # Linear(text_dim, dim).weight is [dim, text_dim]
        "w": init["classifier"],
        "strong": np.array(scorer.strong_index),
        "weak": np.array(scorer.weak_index),
    }
    np.savez(path, **weights)  # type: ignore[arg-type]  # numpy's stub lets **kwargs reach allow_pickle
    return weights, scorer


def prompts(count: int) -> list[str]:
    rows = read_jsonl(default_data_dir() / "eval" / "routellm_mmlu.jsonl.gz")
    return list(dict.fromkeys(row["prompt"] for row in rows))[:count]


async def in_process(texts: list[str], concurrency: int, seconds: float) -> dict[str, float]:
    settings = RouterSettings(embedder={"cache_size": 0}, scorers=[{"name": "mf"}])  # MF against MF
    latencies: list[float] = []
    counter = iter(range(10**9))
    async with open_engine(settings) as engine:
        await engine.route([RouteQuery(prompt="warm up")])
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < deadline:
                request = RouteQuery(prompt=texts[next(counter) % len(texts)])
                started = time.perf_counter()
                await engine.route([request])
                latencies.append((time.perf_counter() - started) * 1e3)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"p50_ms": float(np.percentile(latencies, 50)), "p99_ms": float(np.percentile(latencies, 99)),
            "per_s": len(latencies) / elapsed, "calls": len(latencies)}


def server_overhead(
    python: Path, weights_path: Path, embed_port: int, env: dict[str, str], seconds: float, rounds: int
) -> dict[str, list[dict[str, float]]]:
    """Time to first token through RouteLLM's openai_server and through our gateway, same upstream; per round."""
    tmp = weights_path.parent
    subprocess.run([python, str(HERE / "routellm_checkpoint.py"), str(weights_path), str(tmp / "ckpt")], check=True,
                   env={**env, "OPENAI_API_KEY": "unused"})
    (tmp / "routellm.yaml").write_text(f"mf:\n  checkpoint_path: {tmp / 'ckpt'}\n  num_models: {len(np.load(weights_path)['P'])}\n  text_dim: 384\n")
    upstream_port, routellm_port, gateway_port = free_port(), free_port(), free_port()
    (tmp / "gateway.toml").write_text(
        f'[server]\nhttp_port = {gateway_port}\ngrpc_port = {free_port()}\nlog_level = "WARNING"\n'
        f'[[upstreams]]\nname = "up"\nprovider = "openai"\nbase_url = "http://127.0.0.1:{upstream_port}/v1"\n'
        f'models = ["llama3.1:8b", "llama3.2:1b"]\n'
    )
    processes = [subprocess.Popen([sys.executable, "-c", UPSTREAM_SCRIPT, str(upstream_port), "20", "0"], cwd=ROOT, env=env)]
    try:
        processes.append(subprocess.Popen(
            [python, "-m", "routellm.openai_server", "--routers", "mf", "--config", str(tmp / "routellm.yaml"),
             "--port", str(routellm_port), "--base-url", f"http://127.0.0.1:{upstream_port}/v1", "--api-key", "unused",
             "--strong-model", "openai/llama3.1:8b", "--weak-model", "openai/llama3.2:1b"],
            cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**env, "OPENAI_API_KEY": "unused", "OPENAI_BASE_URL": f"http://127.0.0.1:{embed_port}/v1",
                 "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
        ))
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "gateway_service", "up", "--config", str(tmp / "gateway.toml")], cwd=ROOT,
            env={**env, "ROUTER_SERVER__PORT": str(free_port()), "ROUTER_EMBEDDER__CACHE_SIZE": "0",
                 "ROUTER_SERVER__LOG_LEVEL": "WARNING", "ROUTER_SCORERS": '[{"name": "mf"}]'},
        ))
        wait_http(f"http://127.0.0.1:{upstream_port}/", processes[0])
        wait_http(f"http://127.0.0.1:{routellm_port}/docs", processes[1], timeout=120)
        wait_http(f"http://127.0.0.1:{gateway_port}/healthz", processes[2])
        series = {
            "direct": (f"http://127.0.0.1:{upstream_port}/v1/chat/completions", "llama3.2:1b"),
            "routellm_server": (f"http://127.0.0.1:{routellm_port}/v1/chat/completions", "router-mf-0.5"),
            "our_gateway": (f"http://127.0.0.1:{gateway_port}/v1/chat/completions", "router-mf-0.5"),
        }
        out: dict[str, list[dict[str, float]]] = {name: [] for name in series}
        for _ in range(rounds):
            for name, (url, model) in series.items():
                ms = asyncio.run(ttft_series(url, model, seconds))  # a new prompt each request: no cache hits
                out[name].append({"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "n": len(ms)})
        return out
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)


def plot(results: dict, levels: list[int], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["RouteLLM MF", "our Route (gRPC)", "our engine (in-process)"]
    keys = ["routellm", "route_grpc", "in_process"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / len(levels)
    for i, c in enumerate(levels):
        axes[0].bar(np.arange(3) + i * width, [results[k][str(c)]["per_s"] for k in keys], width, label=f"concurrency {c}")
        axes[1].bar(np.arange(3) + i * width, [results[k][str(c)]["p99_ms"] for k in keys], width, label=f"concurrency {c}")
    for ax, title in zip(axes, ("routes per second (higher is better)", "p99 latency, ms (lower is better)"), strict=True):
        ax.set_xticks(np.arange(3) + width * (len(levels) - 1) / 2, names)
        ax.set_title(title)
        ax.legend()
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    args = parser.parse_args()
    python = ensure_venv()
    texts = prompts(3000)
    RESULTS.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROUTER_", "GATEWAY_", "OPENAI_"))}
    from router_service.adapters.local_embedder import LocalEmbedder
    from router_service.config import LocalEmbedderSettings

    embedder = LocalEmbedder(LocalEmbedderSettings())
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        weights_path, out_path = Path(tmp, "w.npz"), Path(tmp, "out.json")
        _weights, scorer = export_weights(weights_path)
        embed_port, router_port = free_port(), free_port()
        server = subprocess.Popen([sys.executable, "-c", EMBEDDING_SERVER, str(embed_port)], cwd=ROOT, env=env)
        router = start_router(router_port, scorer="mf")  # MF against MF
        try:
            time.sleep(4)
            routellm_env = {**env, "OPENAI_BASE_URL": f"http://127.0.0.1:{embed_port}/v1", "OPENAI_API_KEY": "unused"}
            for i in range(args.rounds):
                fresh = texts[i::args.rounds]  # nothing repeats, even across rounds
                prompts_path = Path(tmp, f"p{i}.json")
                prompts_path.write_text(json.dumps(fresh))
                subprocess.run(
                    [python, str(HERE / "routellm_side.py"), str(weights_path), str(prompts_path), str(out_path),
                     str(args.seconds), *map(str, args.concurrency)],
                    env=routellm_env, check=True,
                )
                routellm = json.loads(out_path.read_text())
                ours = {str(c): asyncio.run(load(f"127.0.0.1:{router_port}", fresh, c, args.seconds)) for c in args.concurrency}
                local = {str(c): asyncio.run(in_process(fresh, c, args.seconds)) for c in args.concurrency}
                raw = raw_embedder(embedder, fresh, args.seconds)
                scores = scorer.model_scores_sync(embedder.embed_sync(fresh[:200]))
                win = sigmoid(scores[:, scorer.strong_index] - scores[:, scorer.weak_index])
                rounds.append({
                    "routellm": routellm["load"], "route_grpc": ours, "in_process": local, "raw": raw,
                    "max_score_diff": float(np.max(np.abs(win - np.asarray(routellm["scores"])))),
                    "torch": routellm["torch"],
                })
                top = str(max(args.concurrency))
                print(f"round {i + 1}: at c={top} RouteLLM {routellm['load'][top]['per_s']:.0f}/s, "
                      f"ours {ours[top]['per_s']:.0f}/s", flush=True)
            router.terminate()
            router.wait(timeout=30)
            overhead = server_overhead(python, weights_path, embed_port, env, args.seconds, args.rounds)
        finally:
            for process in (router, server):
                process.terminate()
                process.wait(timeout=30)

    def figure(get: Any, fmt: str = "{:.2f}") -> str:
        return spread([get(r) for r in rounds], fmt)

    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, torch {rounds[0]['torch']}"
    lines = [
        f"RouteLLM 0.2.0 MF vs routestack ({time.strftime('%Y-%m-%d')}; {machine})",
        f"Same MMLU prompts ({len(texts)}, a fresh third each round), same embedder (all-MiniLM-L6-v2), same MF "
        f"weights; no cache hits; median of {args.rounds} interleaved rounds (min-max).",
        "",
        "| router | concurrency | p50 ms | p99 ms | routes/s |",
        "|---|---|---|---|---|",
    ]
    labels = {"routellm": "RouteLLM MF (calculate_strong_win_rate, as its server calls it)",
              "route_grpc": "our Route over gRPC", "in_process": "our engine, in-process"}
    for key, label in labels.items():
        for c in map(str, args.concurrency):
            lines.append(
                f"| {label} | {c} | {figure(lambda r, k=key, c=c: r[k][c]['p50_ms'])} | "
                f"{figure(lambda r, k=key, c=c: r[k][c]['p99_ms'])} | {figure(lambda r, k=key, c=c: r[k][c]['per_s'], '{:.0f}')} |"
            )
    top = str(max(args.concurrency))
    max_diff = max(r["max_score_diff"] for r in rounds)
    lines += [
        f"| raw embedder, batches of 32 (ceiling) | | | | {figure(lambda r: r['raw']['batched_per_s'], '{:.0f}')} |",
        "",
        f"- same scores: max |our win rate - RouteLLM's| over 200 prompts a round = {max_diff:.2e} (must be < 1e-5)",
        f"- throughput at concurrency {top}, our Route / RouteLLM: "
        f"{figure(lambda r: r['route_grpc'][top]['per_s'] / r['routellm'][top]['per_s'])}x (goal >= 2x)",
        f"- p99 at concurrency {top}, RouteLLM / our Route: "
        f"{figure(lambda r: r['routellm'][top]['p99_ms'] / r['route_grpc'][top]['p99_ms'])}x (above 1: ours is better)",
        f"- our Route at concurrency {top} / raw batched embedder: "
        f"{figure(lambda r: r['route_grpc'][top]['per_s'] / r['raw']['batched_per_s'])}",
        "",
        "| time to first token, same upstream (OpenAI-format test server), routed, streaming | p50 ms | p99 ms |",
        "|---|---|---|",
        *(f"| {label} | {spread([o['p50_ms'] for o in overhead[key]])} | {spread([o['p99_ms'] for o in overhead[key]])} |"
          for key, label in (
              ("direct", "direct to the upstream (baseline)"),
              ("routellm_server", "through RouteLLM's openai_server (router-mf-0.5)"),
              ("our_gateway", "through our gateway + router (router-mf-0.5)"),
          )),
        "",
        "- added at p50, within each round: RouteLLM's server "
        + spread([r["p50_ms"] - d["p50_ms"] for r, d in zip(overhead["routellm_server"], overhead["direct"], strict=True)], "{:+.2f}")
        + " ms; ours "
        + spread([o["p50_ms"] - d["p50_ms"] for o, d in zip(overhead["our_gateway"], overhead["direct"], strict=True)], "{:+.2f}")
        + " ms (both include routing; RouteLLM embeds over loopback HTTP, we in-process; our router's cache is off,"
        " so both embed every request)",
        "- RouteLLM's default embedder is OpenAI's text-embedding-3-small, a network round trip per prompt",
        "  that this comparison leaves out (both sides embed on loopback here); see the README for its cost.",
    ]
    report = "\n".join(lines)
    print(report)
    (RESULTS / "versus_routellm.md").write_text(report + "\n")
    (RESULTS / "versus_routellm.json").write_text(json.dumps({"rounds": rounds, "server_overhead": overhead}, indent=1))
    last = rounds[-1]
    plot({k: last[k] for k in labels}, args.concurrency, RESULTS / "versus_routellm.png")


if __name__ == "__main__":
    main()
