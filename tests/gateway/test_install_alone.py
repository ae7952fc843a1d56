"""Each service installs alone: the gateway in a fresh venv, without onnxruntime, serves a routed completion."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT
from tests.http_servers import serve_app
from tests.llm_servers import LLMServerState, llm_app

ROUTER_ONLY = {"onnxruntime", "onnx", "tokenizers", "model2vec", "safetensors", "numpy"}
GATEWAY_ONLY = {"starlette", "uvicorn", "httptools", "httpx-sse"}


def resolved(extra: str) -> set[str]:
    """The distributions pip would install for ``.[extra]`` into an empty environment."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report", "-",
         f"{ROOT}[{extra}]"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    return {item["metadata"]["name"].lower() for item in report["install"]}


@pytest.mark.timeout(600)
def test_each_extra_pulls_only_its_own_service() -> None:
    gateway, router = resolved("gateway"), resolved("router")
    assert not gateway & ROUTER_ONLY, f"the gateway pulls {sorted(gateway & ROUTER_ONLY)}"
    assert not router & GATEWAY_ONLY, f"the router pulls {sorted(router & GATEWAY_ONLY)}"
    assert GATEWAY_ONLY <= gateway and {"onnxruntime", "tokenizers"} <= router


@pytest.fixture(scope="module")
def gateway_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with nothing but ``pip install '.[gateway]'``."""
    folder = tmp_path_factory.mktemp("gateway-venv")
    venv.create(folder, with_pip=True)
    install = subprocess.run(
        [str(folder / "bin" / "python"), "-m", "pip", "install", "--quiet", f"{ROOT}[gateway]"],
        capture_output=True, text=True, timeout=600, cwd=folder,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    return folder


@pytest.mark.timeout(600)
async def test_gateway_alone_serves_a_routed_completion(gateway_venv: Path, router_app, tmp_path: Path) -> None:
    python = gateway_venv / "bin" / "python"
    modules = sorted(ROUTER_ONLY)
    probe = subprocess.run(
        [str(python), "-c", f"import importlib.util as u; print([m for m in {modules!r} if u.find_spec(m)])"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert probe.stdout.strip() == "[]", probe.stdout + probe.stderr  # none of the router's dependencies here

    async with serve_app(llm_app(LLMServerState())) as ollama_url:
        config = tmp_path / "gateway.toml"
        config.write_text(  # ports 0: the gateway says in its log which ones it bound
            '[server]\nhttp_port = 0\ngrpc_port = 0\n'
            f'[router]\naddress = "127.0.0.1:{router_app.port}"\ntimeout_s = 5\n'
            f'[[upstreams]]\nname = "ollama"\nprovider = "ollama"\nbase_url = "{ollama_url}"\n'
            'models = ["llama3.1:8b", "llama3.2:1b"]\n'
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "ROUTER_"))}
        gateway = await asyncio.create_subprocess_exec(
            str(gateway_venv / "bin" / "gateway-service"), "serve", "--config", str(config),
            cwd=tmp_path, env=env, stderr=asyncio.subprocess.PIPE,
        )
        assert gateway.stderr is not None
        log = b""
        try:
            while b"/v1 and gRPC" not in log:  # "gateway serving OpenAI HTTP on http://127.0.0.1:PORT/v1 and gRPC ..."
                line = await asyncio.wait_for(gateway.stderr.readline(), timeout=60)
                assert line, f"the gateway exited: {log.decode()}"
                log += line
            http_port = int(log.split(b"http://127.0.0.1:")[1].split(b"/v1")[0])
            async with httpx.AsyncClient(timeout=10) as http:
                answer = await http.post(
                    f"http://127.0.0.1:{http_port}/v1/chat/completions",
                    json={"model": "router", "messages": [{"role": "user", "content": "Say hello."}]},
                )
        finally:
            gateway.terminate()
            _, stderr = await gateway.communicate()
            stderr = log + stderr
    assert answer.status_code == 200, answer.text + stderr.decode()
    assert answer.json()["choices"][0]["message"]["content"] == "Hello, world!"
    assert answer.headers["x-route-routed"] == "true" and answer.headers["x-route-degraded"] == "false"
    assert gateway.returncode == 0, stderr.decode()  # SIGTERM: drained and exited cleanly


def test_gateway_up_without_the_router_says_what_to_install(gateway_venv: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [str(gateway_venv / "bin" / "gateway-service"), "up"], capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "pip install '.[router]'" in result.stderr and "Traceback" not in result.stderr
