"""`gateway-service serve --workers N`: N processes on one port, limits split, one SIGTERM stops all."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from bench.router_bench import free_port
from gateway_service.config import load_settings
from gateway_service.workers import per_worker, worker_count
from service_core.cpus import usable_cpus
from tests.conftest import ROOT, closed_port
from tests.http_servers import serve_app_in_thread
from tests.llm_servers import LLMServerState, llm_app


def test_each_worker_enforces_its_share_of_the_limits_and_names_the_configured_one() -> None:
    from gateway_service.core.admission import Admission
    from gateway_service.errors import TooManyStreams

    settings = load_settings(None, limits={"max_streams": 101, "max_streams_per_key": 4}, server={"max_connections": 10})
    assert per_worker(settings, 2).server.max_connections == 5
    admission = Admission(settings.limits, keys_checked=True, workers=2)
    with admission.slot("k"), admission.slot("k"), pytest.raises(TooManyStreams) as refused, admission.slot("k"):
        pass
    assert "limits.max_streams_per_key=4; 2 in each of 2 worker processes" in str(refused.value)


def test_the_default_is_one_worker_per_usable_cpu_capped_by_the_cgroup_quota(tmp_path: Path) -> None:
    cpus = len(os.sched_getaffinity(0))
    assert usable_cpus(tmp_path) == cpus  # no cgroup files: the affinity
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert usable_cpus(tmp_path) == cpus  # v2, no quota
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert usable_cpus(tmp_path) == 1  # half a CPU: one worker
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("150000\n")  # v1: 1.5 CPUs
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert usable_cpus(tmp_path) == min(cpus, 2)
    settings = load_settings(None)
    assert settings.server.workers == 0 and worker_count(settings, None) == usable_cpus()
    assert worker_count(settings, 3) == 3
    assert worker_count(load_settings(None, server={"http_port": 0}), None) == 1  # a random port cannot be shared


def _start_workers(
    tmp_path: Path, upstream: str, log_name: str, extra: str = ""
) -> tuple[subprocess.Popen[bytes], str]:
    http_port, grpc_port = free_port(), free_port()
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[server]\nhttp_port = {http_port}\ngrpc_port = {grpc_port}\n{extra}[router]\naddress = "127.0.0.1:{closed_port()}"\n'
        f'timeout_s = 0.2\n[[upstreams]]\nname = "ollama"\nprovider = "ollama"\nbase_url = "{upstream}"\n'
        'models = ["llama3.1:8b", "llama3.2:1b"]\n'
        f'[capture]\nenabled = true\ndir = "{tmp_path / "captures"}"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROUTER_", "GATEWAY_", "PROMETHEUS_"))}
    with (tmp_path / log_name).open("wb") as log:
        gateway = subprocess.Popen(
            [sys.executable, "-m", "gateway_service", "serve", "--config", str(config), "--workers", "2"],
            cwd=ROOT, env=env, stderr=log,
        )
    url = f"http://127.0.0.1:{http_port}"
    written = tmp_path / log_name
    # Every worker serving (the supervisor says so at each one's first heartbeat), not only the first.
    assert _wait_for(lambda: written.read_text().count(") serving") >= 2 or gateway.poll() is not None, 120), \
        written.read_text()
    return gateway, url


def _started_total(metrics: str) -> float:
    line = next(x for x in metrics.splitlines() if x.startswith('gateway_requests_total{api="openai/chat",outcome="ok"}'))
    return float(line.rsplit(" ", 1)[1])


def test_workers_share_the_port_and_stop_together(tmp_path: Path) -> None:
    with serve_app_in_thread(llm_app(LLMServerState())) as upstream:
        gateway, url = _start_workers(tmp_path, upstream, "gateway.log")
        try:
            body = {"model": "llama3.2:1b", "messages": [{"role": "user", "content": "hi"}]}
            for _ in range(40):  # a new connection each: the kernel spreads connections, not requests
                with httpx.Client(timeout=10) as client:
                    answer = client.post(f"{url}/v1/chat/completions", json=body)
                    assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"] == "Hello, world!"
            # Whichever worker answers /metrics reports every worker's requests.
            assert {_started_total(httpx.get(f"{url}/metrics", timeout=5).text) for _ in range(6)} == {40.0}
        finally:
            gateway.send_signal(signal.SIGTERM)
            code = gateway.wait(timeout=30)
    text = (tmp_path / "gateway.log").read_text()
    assert code == 0, text[-2000:]
    served = [sum(1 for line in text.splitlines() if f"[worker {i}] gateway_service.access" in line) for i in (0, 1)]
    assert sum(served) == 40 and min(served) > 0, served  # both workers answered
    assert "Traceback" not in text
    # One capture file per worker: rotation is per process (nothing routed here: the router is down).
    assert sorted(p.name for p in (tmp_path / "captures").iterdir()) == ["prompts.w0.jsonl", "prompts.w1.jsonl"]


def test_workers_stop_when_their_parent_is_killed_outright(tmp_path: Path) -> None:
    with serve_app_in_thread(llm_app(LLMServerState())) as upstream:
        gateway, url = _start_workers(tmp_path, upstream, "killed.log")
        assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
        gateway.kill()  # SIGKILL: nothing is passed on
        gateway.wait(timeout=10)
        for _ in range(100):  # the workers drain (nothing in flight) and exit
            try:
                httpx.get(f"{url}/healthz", timeout=1)
            except httpx.HTTPError:
                break
            time.sleep(0.1)
        else:
            pytest.fail("workers still serve after their parent was killed")


def test_workers_need_fixed_ports(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway_service.__main__ import main

    monkeypatch.setenv("GATEWAY_SERVER__HTTP_PORT", "0")
    assert main(["serve", "--workers", "2"]) == 2
    assert "server.workers > 1 needs fixed ports" in capsys.readouterr().err


def _worker_pids(gateway: subprocess.Popen[bytes]) -> set[int]:
    children = Path(f"/proc/{gateway.pid}/task/{gateway.pid}/children").read_text().split()
    pids = set()
    for pid in map(int, children):  # the workers, not multiprocessing's resource tracker
        if b"gateway_service" in Path(f"/proc/{pid}/cmdline").read_bytes() or b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
            pids.add(pid)
    return pids


def _all_answer(url: str, count: int) -> list[int]:
    body = {"model": "llama3.2:1b", "messages": [{"role": "user", "content": "hi"}]}
    codes = []
    for _ in range(count):  # a new connection each, so the kernel spreads them over the workers
        with httpx.Client(timeout=10) as client:
            try:
                codes.append(client.post(f"{url}/v1/chat/completions", json=body).status_code)
            except httpx.HTTPError:
                codes.append(0)
    return codes


def _wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_worker_that_dies_is_replaced_and_the_others_serve_on(tmp_path: Path, sig: signal.Signals) -> None:
    """Issue #28.9: SIGKILL of one worker stopped the healthy one and the parent (a total outage); SIGTERM
    of one left the service at half its limits without a word."""
    with serve_app_in_thread(llm_app(LLMServerState())) as upstream:
        gateway, url = _start_workers(tmp_path, upstream, "dies.log")
        try:
            before = _worker_pids(gateway)
            assert len(before) == 2, before
            victim = min(before)
            os.kill(victim, sig)
            assert _wait_for(lambda: victim not in _worker_pids(gateway), 20)
            assert set(_all_answer(url, 10)) == {200}  # the other worker serves meanwhile
            assert _wait_for(lambda: len(_worker_pids(gateway)) == 2, 20), "no replacement worker"
            assert gateway.poll() is None  # the parent serves on
            after = _worker_pids(gateway)
            assert victim not in after and after & before
        finally:
            gateway.send_signal(signal.SIGTERM)
            code = gateway.wait(timeout=30)
    text = (tmp_path / "dies.log").read_text()
    assert code == 0 and f"pid {victim})" in text and "starting another" in text, text[-2000:]


def test_a_stopped_worker_gets_no_more_connections(tmp_path: Path) -> None:
    """Issue #28.9: a SIGSTOPped worker still got half the new connections (each hung)."""
    with serve_app_in_thread(llm_app(LLMServerState())) as upstream:
        gateway, url = _start_workers(tmp_path, upstream, "stopped.log", extra="worker_hang_s = 2\n")
        try:
            victim = min(_worker_pids(gateway))
            os.kill(victim, signal.SIGSTOP)
            assert _wait_for(lambda: victim not in _worker_pids(gateway), 30), "the stopped worker was not replaced"
            assert set(_all_answer(url, 10)) == {200}
        finally:
            gateway.send_signal(signal.SIGTERM)
            code = gateway.wait(timeout=30)
    text = (tmp_path / "stopped.log").read_text()
    assert code == 0 and "has given no heartbeat" in text, text[-2000:]


def test_a_config_error_in_a_worker_is_one_line_and_exit_2(tmp_path: Path) -> None:
    with socket.socket() as taken:  # the port a worker must bind is held: a config error only the worker meets
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "gateway.toml"
        config.write_text(f"[server]\nhttp_port = {port}\ngrpc_port = {free_port()}\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ROUTER_", "GATEWAY_", "PROMETHEUS_"))}
        done = subprocess.run(
            [sys.executable, "-m", "gateway_service", "serve", "--config", str(config), "--workers", "2"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
        )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stderr.count(f"cannot listen on 127.0.0.1:{port}") == 1, done.stderr
