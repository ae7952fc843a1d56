"""The real coding agents, live: Claude Code 2.1.328 (``claude -p``) and Codex 0.169.0 (``codex exec``), their own
binaries from npm (``make agents``; .ci/run installs them), pointed at the gateway unchanged.

In front of the gateway, the byte-exact test upstream plays the model: it calls the agent's shell tool
once (``ls``), then answers text once the conversation holds the tool's result. Each agent must run the
tool, send its result back through the gateway, print the answer and exit 0; the gateway must route and
log every call.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
from pathlib import Path

import pytest

from tests.gateway.conftest import Stack

ROOT = Path(__file__).resolve().parents[2]
AGENTS = Path(os.environ.get("ROUTESTACK_AGENTS", ROOT / ".agents")) / "node_modules" / ".bin"
REPLY = ("The directory holds ", "hello.py", ".")


def agent(name: str) -> str:
    found = AGENTS / name
    if found.exists():
        return str(found)
    if os.environ.get("CI"):
        pytest.fail(f"{found} is missing: .ci/run installs the agents with `make agents` (npm)")
    pytest.skip(f"{name} is not installed: run `make agents` (npm)")


async def run(argv: list[str], env: dict[str, str], cwd: Path, timeout_s: float = 90) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *argv, cwd=cwd, env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        process.kill()
        out, err = await process.communicate()
        pytest.fail(f"{argv[0]} did not finish in {timeout_s:g}s: {out.decode()[-2000:]} {err.decode()[-2000:]}")
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def workspace(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    work = tmp_path / "work"
    work.mkdir()
    (work / "hello.py").write_text('print("hello")\n')
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8", "NO_COLOR": "1"}
    return work, env


def tool_results(stack: Stack) -> list[str]:
    """The tool results the agents sent back, as the upstream received them."""
    return [m["content"] for state in (stack.ollama, stack.openai) for r in state.requests
            for m in r["body"].get("messages", ()) if m.get("role") == "tool"]


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "gateway_service.access"]


def ran_its_loop(stack: Stack, caplog: pytest.LogCaptureFixture, api: str, code: int, out: str, err: str) -> list[dict]:
    """The agent exited 0 having printed the answer, its ls result reached the model through the gateway, and every
    call it made was answered; the access lines of its calls."""
    assert code == 0, f"exit {code}: {out[-2000:]} {err[-2000:]}"
    assert "hello.py" in out
    assert any("hello.py" in result for result in tool_results(stack)), "the ls result never reached the model"
    lines = [line for line in access_lines(caplog) if line["api"] == api]
    assert len(lines) >= 2 and all(line["status"] == 200 and line["outcome"] == "ok" for line in lines), lines
    return lines


@pytest.mark.timeout(240)
async def test_claude_code_runs_its_tool_loop_through_the_gateway(
    stack: Stack, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    claude = agent("claude")
    caplog.set_level(logging.INFO, logger="gateway_service.access")
    stack.ollama.tool_call, stack.ollama.tool_once, stack.ollama.reply = ("Bash", '{"command": "ls"}'), True, REPLY
    work, env = workspace(tmp_path)
    env |= {"ANTHROPIC_BASE_URL": f"http://127.0.0.1:{stack.gateway.http_port}", "ANTHROPIC_API_KEY": "sk-test",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_AUTOUPDATER": "1"}
    code, out, err = await run([claude, "-p", "List the files here with ls.", "--allowedTools", "Bash(ls:*)"], env, work)
    lines = ran_its_loop(stack, caplog, "anthropic/messages", code, out, err)
    assert all(line["routed"] for line in lines)  # claude-* is routed by the default alias


@pytest.mark.timeout(240)
async def test_codex_runs_its_tool_loop_through_the_gateway(
    stack: Stack, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    codex = agent("codex")
    caplog.set_level(logging.INFO, logger="gateway_service.access")
    stack.ollama.tool_call, stack.ollama.tool_once, stack.ollama.reply = ("exec_command", '{"cmd": "ls"}'), True, REPLY
    work, env = workspace(tmp_path)
    env |= {"CODEX_HOME": str(tmp_path / "home"), "GW_KEY": "sk-test"}
    base = f"http://127.0.0.1:{stack.gateway.http_port}/v1"
    argv = [codex, "exec", "--skip-git-repo-check", "-c", f'model_providers.gw.base_url="{base}"',
            "-c", 'model_providers.gw.wire_api="responses"', "-c", 'model_providers.gw.env_key="GW_KEY"',
            "-c", 'model_providers.gw.name="gw"', "-c", 'model_provider="gw"', "-m", "router",
            "What files are in this directory? Use ls."]
    code, out, err = await run(argv, env, work)
    ran_its_loop(stack, caplog, "openai/responses", code, out, err)


def test_the_agents_are_the_versions_the_recordings_came_from() -> None:
    """The versions `make agents` pins are those of ../shared/clients (a newer agent may send what they lack)."""
    makefile = (ROOT / "Makefile").read_text()
    assert "@anthropic-ai/claude-code@2.1.328" in makefile and "@openai/codex@0.169.0" in makefile
    assert shutil.which("npm") or not os.environ.get("CI"), "CI needs npm for the agents (Debian's npm)"
