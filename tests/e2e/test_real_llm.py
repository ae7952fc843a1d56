"""End to end through a REAL LLM server: the openai SDK -> gateway -> router -> llama.cpp's server.

llama-cpp-python's OpenAI-compatible server runs a tiny GGUF the test writes
(tiny_gguf.py) whose greedy reply is known, so the whole path streams real
tokens from a real inference engine, with its own SSE framing and quirks (no
usage chunk in streams).
"""

from __future__ import annotations

import asyncio
import importlib.util
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import httpx
import openai
import pytest

# Only look for it: importing llama_cpp here would open files it never closes; the server runs apart.
if importlib.util.find_spec("llama_cpp") is None:
    pytest.skip("needs llama-cpp-python[server]; `make test` installs it", allow_module_level=True)

from gateway_service.server import GatewayApp, build_gateway
from tests.e2e.llama_server import running_llama_server
from tests.e2e.tiny_gguf import write_tiny_gguf
from tests.gateway.conftest import STRONG, WEAK, gateway_settings


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    model = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    reply = write_tiny_gguf(model)
    with running_llama_server(model) as url:
        yield url, reply


@pytest.fixture
async def gateway(router_app, llama_server) -> AsyncIterator[GatewayApp]:
    url, _ = llama_server
    settings = gateway_settings(
        router_app.port, url, url,
        upstreams=[{"name": "llama-cpp", "provider": "openai", "base_url": f"{url}/v1", "models": [STRONG, WEAK]}],
    )
    app = await build_gateway(settings)
    try:
        yield app
    finally:
        await app.stop()


async def test_sdk_streams_a_real_completion_through_the_router(gateway, llama_server) -> None:
    _, reply = llama_server
    async with openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{gateway.http_port}/v1", api_key="x", max_retries=0) as sdk:
        stream = await sdk.chat.completions.create(
            model="router-mf-50", messages=[{"role": "user", "content": "Greet me like a cowboy."}],
            stream=True, stream_options={"include_usage": True}, max_tokens=32,
        )
        pieces, finish, models = [], None, set()
        async for chunk in stream:
            models.add(chunk.model)
            if chunk.choices:
                pieces.append(chunk.choices[0].delta.content or "")
                finish = chunk.choices[0].finish_reason or finish
        assert "".join(pieces) == reply
        assert len([p for p in pieces if p]) > 1  # really streamed, token by token
        assert finish == "stop" and models <= {STRONG, WEAK}

        whole = await sdk.chat.completions.create(
            model="router", messages=[{"role": "user", "content": "Again, please."}], max_tokens=32
        )
        assert whole.choices[0].message.content == reply


async def test_routellm_s_seed_command_streams_from_the_real_server_with_junk_openai_env(llama_server, tmp_path) -> None:
    """RouteLLM's first-release command line, unchanged but for the program name, in front of llama.cpp."""
    import os

    url, reply = llama_server
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROUTER_", "GATEWAY_"))}
    env |= {"OPENAI_API_KEY": "sk-junk-never-read", "OPENAI_BASE_URL": "http://junk.invalid/v1"}
    log = (tmp_path / "routellm.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "routellm_compat", "--routers", "mf", "--strong-model", "llama3:70b", "--weak-model",
         "llama3", "--alt-base-url", f"{url}/v1/", "--alt-api-key", "ollama", "--port", str(port), "--host", "127.0.0.1"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        async with httpx.AsyncClient() as http:
            for _ in range(300):
                if server.poll() is not None:
                    raise RuntimeError((tmp_path / "routellm.log").read_text())
                try:
                    if (await http.get(f"http://127.0.0.1:{port}/health")).status_code == 200:
                        break
                except httpx.HTTPError:
                    await asyncio.sleep(0.2)
        async with openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0) as sdk:
            stream = await sdk.chat.completions.create(
                model="router-mf-0.11593", messages=[{"role": "user", "content": "Hello!"}], stream=True, max_tokens=32,
            )
            pieces = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
        assert "".join(pieces) == reply and len([p for p in pieces if p]) > 1
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    assert "Traceback" not in (tmp_path / "routellm.log").read_text()
