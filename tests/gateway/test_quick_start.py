"""README's quick start says what `make run` prints: the command is run and its lines compared (issue #27)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from bench.router_bench import free_port
from tests.conftest import ROOT


def readme_quick_start_lines() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("until one answers there, the log says so, naming the\nURL:\n\n```\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line]


def _lines_until(process: subprocess.Popen[str], marker: str) -> list[str]:
    assert process.stderr is not None
    lines = []
    for line in process.stderr:
        lines.append(line)
        if marker in line:
            break
    return lines


def test_the_quick_start_lines_are_what_gateway_service_up_prints_and_sighup_reloads() -> None:
    http, grpc_port, router = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROUTER_", "GATEWAY_"))}
    env.update(GATEWAY_SERVER__HTTP_PORT=str(http), GATEWAY_SERVER__GRPC_PORT=str(grpc_port),
               GATEWAY_ROUTER__ADDRESS=f"127.0.0.1:{router}", ROUTER_SERVER__PORT=str(router))
    command = [sys.executable, "-m", "gateway_service", "up", "--sample", "hi",
               "--sample", "Prove that there are infinitely many prime numbers."]
    with subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True) as process:
        printed: list[str] = []
        assert process.stderr is not None
        for line in process.stderr:
            printed.append(line.split(": ", 1)[1].rstrip("\n") if "gateway_service: " in line else "")
            if "gateway_service: next: " in line:
                break
        # README: "edit [[scorers]] and kill -HUP": under `up` SIGHUP killed router and gateway without a word.
        process.send_signal(signal.SIGHUP)
        after_hangup = [line for line in _lines_until(process, "scorers reloaded")]
        assert process.poll() is None, after_hangup
        process.terminate()
        rest = process.stderr.read()
    assert process.returncode == 0 and "shutting down" in rest and "gateway and router stopped" in rest, rest
    expected = [line.replace("8000", str(http)) for line in readme_quick_start_lines()]
    got = [line for line in printed if line]
    if "connection refused" not in "".join(got):  # an Ollama really answers on this machine: a completion instead
        expected = [line for line in expected if not line.startswith("sample completion")]
        got = [line for line in got if not line.startswith("sample completion")]
    assert [line for line in got if not line.startswith("up: ")] == expected, "\n".join(got)
