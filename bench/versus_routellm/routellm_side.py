"""RouteLLM's MF routing path, run inside a throwaway virtualenv (torch + routellm 0.2.0).

    python routellm_side.py WEIGHTS.npz PROMPTS.json OUT.json SECONDS CONCURRENCY...

OPENAI_BASE_URL must point at an OpenAI-compatible embeddings server before this
starts: RouteLLM builds its OpenAI client at import time. The router is RouteLLM's
own MatrixFactorizationRouter around its own MFModel, with our trained weights
copied in; calculate_strong_win_rate is called the way RouteLLM's server calls it,
synchronously inside async request handlers on one event loop.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import numpy as np
import torch
from routellm.routers.matrix_factorization.model import MFModel
from routellm.routers.routers import MatrixFactorizationRouter


def build_router(weights_path: str) -> MatrixFactorizationRouter:
    w = np.load(weights_path)
    P, W, classifier = w["P"], w["W"], w["w"]
    model = MFModel(dim=P.shape[1], num_models=P.shape[0], text_dim=W.shape[1], num_classes=1, use_proj=True)
    with torch.no_grad():
        model.P.weight.copy_(torch.from_numpy(P))
        model.text_proj[0].weight.copy_(torch.from_numpy(W))
        model.classifier[0].weight.copy_(torch.from_numpy(classifier[None, :]))
    # MatrixFactorizationRouter.__init__ loads a checkpoint from the hub; build it around our model instead.
    router = MatrixFactorizationRouter.__new__(MatrixFactorizationRouter)
    router.model = model.eval()
    router.strong_model_id, router.weak_model_id = int(w["strong"]), int(w["weak"])
    return router


async def load(router: MatrixFactorizationRouter, prompts: list[str], concurrency: int, seconds: float) -> dict:
    latencies: list[float] = []
    counter = iter(range(10**9))
    deadline = time.perf_counter() + seconds

    async def handler() -> None:  # a client that sends its next request when the last one is answered
        while time.perf_counter() < deadline:
            prompt = prompts[next(counter) % len(prompts)]
            issued = time.perf_counter()
            await asyncio.sleep(0)  # the request waits its turn on the loop, behind the others
            router.calculate_strong_win_rate(prompt)  # sync, on the event loop, as RouteLLM's Controller does
            latencies.append((time.perf_counter() - issued) * 1e3)

    started = time.perf_counter()
    await asyncio.gather(*(handler() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {"p50_ms": float(np.percentile(latencies, 50)), "p99_ms": float(np.percentile(latencies, 99)),
            "per_s": len(latencies) / elapsed, "calls": len(latencies)}


def main() -> None:
    weights, prompts_path, out, seconds, *levels = sys.argv[1:]
    prompts = json.loads(open(prompts_path).read())
    router = build_router(weights)
    for prompt in prompts[:20]:
        router.calculate_strong_win_rate(prompt)  # warm-up
    scores = [float(router.calculate_strong_win_rate(p)) for p in prompts[:200]]
    results = {str(c): asyncio.run(load(router, prompts[200:], int(c), float(seconds))) for c in levels}
    with open(out, "w") as f:
        json.dump({"scores": scores, "load": results, "torch": torch.__version__, "threads": torch.get_num_threads()}, f)


if __name__ == "__main__":
    main()
