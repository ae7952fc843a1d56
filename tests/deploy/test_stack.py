"""The compose topology as real processes: router, two gateway replicas, nginx balancing HTTP and gRPC.

What deploy/ promises, shown here without a Docker engine: requests spread over
both replicas; a replica killed mid-load costs no request that had not started
on it; SIGTERM drains a replica's in-flight stream to the end; with the router
dead the gateways fail open to the default model, flagged. Each gateway has its
own test upstream (Ollama wire format), so the upstreams tell who served what.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest

from routing_api.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from tests.conftest import ROOT
from tests.http_servers import serve_app
from tests.llm_servers import LLMServerState, llm_app

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
pytestmark = pytest.mark.skipif(NGINX is None, reason="needs nginx (Debian's package; .ci/run installs it)")

STRONG, WEAK = "llama3.1:8b", "llama3.2:1b"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


SHIPPED_NGINX_CONF = ROOT / "deploy" / "compose" / "nginx.conf"


def nginx_conf(tmp: Path, http: tuple[int, int], grpc: tuple[int, int], lb_http: int, lb_grpc: int) -> str:
    """The shipped deploy/compose/nginx.conf, run as it is but for where things are: the two replicas
    on loopback instead of Docker's "gateway" name, free ports, and a pid file and temp dirs of the test's."""
    conf = SHIPPED_NGINX_CONF.read_text()
    replacements = {
        "worker_processes auto;": f"worker_processes 1;\npid {tmp}/nginx.pid;\nerror_log {tmp}/nginx-error.log warn;",
        "\nhttp {": "\nhttp {\n    access_log off;\n" + "".join(
            f"    {kind}_temp_path {tmp}/{kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        ),
        "server gateway:8000 max_fails=1 fail_timeout=30s;": " ".join(
            f"server 127.0.0.1:{port} max_fails=1 fail_timeout=30s;" for port in http
        ),
        "server gateway:50052;": " ".join(f"server 127.0.0.1:{port};" for port in grpc),
        "listen 8000;": f"listen 127.0.0.1:{lb_http};",
        "listen 50052 http2;": f"listen 127.0.0.1:{lb_grpc} http2;",
    }
    for shipped, local in replacements.items():
        assert conf.count(shipped) == 1, f"deploy/compose/nginx.conf no longer has {shipped!r}: update this test"
        conf = conf.replace(shipped, local)
    return conf


@dataclass
class Replica:
    process: subprocess.Popen[bytes]
    http_port: int
    grpc_port: int
    upstream: LLMServerState


@dataclass
class Topology:
    router: subprocess.Popen[bytes]
    replicas: list[Replica]
    lb_http: int
    lb_grpc: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.lb_http}/v1/chat/completions"


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("ROUTER_", "GATEWAY_"))}


async def wait_until_up(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=1) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
            try:
                if (await client.get(url)).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


async def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            await writer.wait_closed()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError(f"port {port} did not open")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
async def topology(tmp_path: Path) -> AsyncIterator[Topology]:
    states = [LLMServerState(), LLMServerState()]
    router_port = free_port()
    processes: list[subprocess.Popen[bytes]] = []
    async with serve_app(llm_app(states[0])) as upstream_a, serve_app(llm_app(states[1])) as upstream_b:
        try:
            router = subprocess.Popen(
                [sys.executable, "-m", "router_service", "serve", "--port", str(router_port)],
                env={**env(), "ROUTER_SERVER__LOG_LEVEL": "WARNING"},
            )
            processes.append(router)
            replicas = []
            for i, upstream_url in enumerate((upstream_a, upstream_b)):
                http_port, grpc_port = free_port(), free_port()
                config = tmp_path / f"gateway-{i}.toml"
                config.write_text(
                    f'default_model = "{STRONG}"\nfallback_model = "{WEAK}"\n'
                    f'[server]\nhttp_port = {http_port}\ngrpc_port = {grpc_port}\ngrace_s = 10\n'
                    f'shutdown_delay_s = 0.5\nlog_level = "WARNING"\nworkers = 1\n'  # as deploy/compose: a process a replica
                    f'[router]\naddress = "127.0.0.1:{router_port}"\ntimeout_s = 2\n'
                    f'[[upstreams]]\nname = "ollama"\nprovider = "ollama"\nbase_url = "{upstream_url}"\n'
                    f'models = ["{STRONG}", "{WEAK}"]\n'
                )
                process = subprocess.Popen([sys.executable, "-m", "gateway_service", "serve", "--config", str(config)], env=env())
                processes.append(process)
                replicas.append(Replica(process, http_port, grpc_port, states[i]))
            lb_http, lb_grpc = free_port(), free_port()
            conf = tmp_path / "nginx.conf"
            conf.write_text(nginx_conf(
                tmp_path, (replicas[0].http_port, replicas[1].http_port),
                (replicas[0].grpc_port, replicas[1].grpc_port), lb_http, lb_grpc,
            ))
            assert NGINX is not None  # the test is skipped without it
            nginx = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(tmp_path), "-g", "daemon off;"])
            processes.append(nginx)
            await wait_for_port(router_port, router)
            for replica in replicas:
                await wait_until_up(f"http://127.0.0.1:{replica.http_port}/readyz", replica.process)
            await wait_for_port(lb_http, nginx)
            yield Topology(router, replicas, lb_http, lb_grpc)
        finally:
            for process in processes:
                stop(process)


def body(model: str = WEAK, stream: bool = False) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "Hello there"}], "stream": stream}


async def test_requests_spread_across_both_replicas_over_http_and_grpc(topology: Topology) -> None:
    async with httpx.AsyncClient(timeout=20) as client:
        for _ in range(20):
            response = await client.post(topology.url, json=body())
            assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == "Hello, world!"
    http_counts = [len(r.upstream.requests) for r in topology.replicas]
    assert min(http_counts) >= 5, http_counts
    async with grpc.aio.insecure_channel(f"127.0.0.1:{topology.lb_grpc}") as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        request = gateway_pb2.ChatRequest(model=WEAK, messages=[gateway_pb2.ChatMessage(role="user", content="Hi")])
        for _ in range(10):
            chunks = [c async for c in stub.Chat(request, timeout=20)]
            assert "".join(c.delta for c in chunks) == "Hello, world!"
    grpc_counts = [len(r.upstream.requests) - n for r, n in zip(topology.replicas, http_counts, strict=True)]
    assert min(grpc_counts) >= 3, grpc_counts


async def test_a_killed_replica_costs_no_request_that_had_not_started_on_it(topology: Topology) -> None:
    for replica in topology.replicas:
        replica.upstream.chunk_delay_s = 0.01  # each request lasts ~40 ms
    results: list[tuple[float, bool]] = []
    killed_at: list[float] = []

    async def load(client: httpx.AsyncClient, count: int) -> None:
        for _ in range(count):
            started = time.monotonic()
            try:
                ok = (await client.post(topology.url, json=body())).status_code == 200
            except httpx.HTTPError:
                ok = False
            results.append((started, ok))

    async def kill_soon() -> None:
        await asyncio.sleep(0.5)
        topology.replicas[0].process.send_signal(signal.SIGKILL)
        killed_at.append(time.monotonic())

    async with httpx.AsyncClient(timeout=20) as client:
        await asyncio.gather(kill_soon(), *(load(client, 25) for _ in range(4)))
    (kill,) = killed_at
    after = [ok for started, ok in results if started > kill + 0.05]
    failed = [started for started, ok in results if not ok]
    assert len(results) == 100 and len(after) > 20
    assert all(after), "a request that started after the kill failed"
    assert len(failed) <= 4  # at most the ones in flight on the killed replica


async def test_sigterm_drains_an_in_flight_stream_to_the_end(topology: Topology) -> None:
    replica = topology.replicas[1]
    replica.upstream.reply = tuple(f"t{i} " for i in range(30))
    replica.upstream.chunk_delay_s = 0.05  # 1.5 s of stream
    direct = f"http://127.0.0.1:{replica.http_port}/v1/chat/completions"
    lines: list[str] = []
    async with httpx.AsyncClient(timeout=20) as client:
        async with client.stream("POST", direct, json=body(stream=True)) as response:
            async for line in response.aiter_lines():
                if line:
                    lines.append(line)
                if len(lines) == 3:
                    replica.process.send_signal(signal.SIGTERM)
                    await asyncio.sleep(0.1)
                    async with httpx.AsyncClient(timeout=2) as probe:
                        ready = await probe.get(f"http://127.0.0.1:{replica.http_port}/readyz")
                    assert ready.status_code == 503  # out of rotation before the listener closes
    assert lines[-1] == "data: [DONE]"
    assert sum('"content":"t' in line for line in lines) == 30
    assert await asyncio.to_thread(replica.process.wait, 20) == 0


async def test_router_killed_gateways_fail_open_to_the_default_model(topology: Topology) -> None:
    topology.router.send_signal(signal.SIGKILL)
    topology.router.wait(timeout=10)
    async with httpx.AsyncClient(timeout=20) as client:
        for _ in range(4):
            response = await client.post(topology.url, json=body(model="router"))
            assert response.status_code == 200
            assert response.json()["model"] == STRONG
            assert response.headers["x-route-degraded"] == "true"
