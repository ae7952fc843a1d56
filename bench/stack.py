"""A local stack as real processes: a test upstream (Ollama wire format) and `gateway-service up`.

Shared by the gateway benchmark, the soak and the fuzz tests, so each starts,
waits for and stops the same topology the same way.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

from bench.router_bench import free_port

__all__ = ["UPSTREAM_SCRIPT", "LocalStack", "local_stack"]

ROOT = Path(__file__).resolve().parent.parent
# argv: port, reply tokens (0: "Hello, world!"), share of requests that fail at random
UPSTREAM_SCRIPT = """
import sys, uvicorn
from tests.llm_servers import LLMServerState, llm_app
tokens, chaos = int(sys.argv[2]), float(sys.argv[3])
state = LLMServerState(chaos=chaos, **({"reply": tuple(f"tok{i} " for i in range(tokens))} if tokens else {}))
uvicorn.run(llm_app(state), host="127.0.0.1", port=int(sys.argv[1]), log_level="critical", access_log=False)
"""


@dataclass(frozen=True)
class LocalStack:
    upstream_port: int
    http_port: int
    grpc_port: int
    gateway: subprocess.Popen[Any]
    upstream: subprocess.Popen[Any]

    @property
    def completions_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/v1/chat/completions"


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without the developer's ROUTER_* / GATEWAY_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROUTER_", "GATEWAY_"))}
    env.update(extra)
    return env


@contextmanager
def local_stack(
    folder: Path, *, reply_tokens: int = 0, chaos: float = 0.0, gateway_toml: str = "", log: IO[bytes] | None = None
) -> Iterator[LocalStack]:
    """Start upstream + router + gateway; ``gateway_toml`` adds sections (e.g. [limits]).

    Free ports are found by binding and releasing them, so another process can take one
    in between: a start that fails that way is tried again once, on new ports."""
    stack = _start(folder, reply_tokens, chaos, gateway_toml, log) or _start(folder, reply_tokens, chaos, gateway_toml, log)
    if stack is None:
        raise RuntimeError("the local stack did not start (twice); see its log")
    try:
        yield stack
    finally:
        _stop(stack.gateway, stack.upstream)


def _stop(*processes: subprocess.Popen[Any]) -> None:
    for process in processes:
        process.terminate()
        process.wait(timeout=30)


def _start(folder: Path, reply_tokens: int, chaos: float, gateway_toml: str, log: IO[bytes] | None) -> LocalStack | None:
    upstream_port, http_port, grpc_port = free_port(), free_port(), free_port()
    config = folder / "gateway.toml"
    config.write_text(
        f'[server]\nhttp_port = {http_port}\ngrpc_port = {grpc_port}\nlog_level = "ERROR"\n{gateway_toml}\n'
        f'[[upstreams]]\nname = "ollama"\nprovider = "ollama"\nbase_url = "http://127.0.0.1:{upstream_port}"\n'
        'models = ["llama3.1:8b", "llama3.2:1b"]\nmax_concurrency = 4096\n'
    )
    env = clean_env(ROUTER_SERVER__PORT=str(free_port()), ROUTER_SERVER__LOG_LEVEL="ERROR")
    output = {"stdout": log, "stderr": log} if log is not None else {"stderr": subprocess.DEVNULL}
    upstream = subprocess.Popen(
        [sys.executable, "-c", UPSTREAM_SCRIPT, str(upstream_port), str(reply_tokens), str(chaos)],
        cwd=ROOT, env=env, **output,
    )
    gateway = subprocess.Popen(
        [sys.executable, "-m", "gateway_service", "up", "--config", str(config)], cwd=ROOT, env=env, **output,
    )
    deadline = time.time() + 90
    while time.time() < deadline:
        if gateway.poll() is not None or upstream.poll() is not None:
            break
        try:
            httpx.get(f"http://127.0.0.1:{http_port}/healthz", timeout=1)
            httpx.get(f"http://127.0.0.1:{upstream_port}/", timeout=1)
            return LocalStack(upstream_port, http_port, grpc_port, gateway, upstream)
        except httpx.HTTPError:
            time.sleep(0.2)
    _stop(gateway, upstream)
    return None
