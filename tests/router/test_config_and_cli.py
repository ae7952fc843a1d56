"""Settings sources, start-up checks and the router-service command line."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from router_service.config import load_settings
from router_service.errors import ConfigError
from router_service.server import build_router
from tests.conftest import ROOT, closed_port, router_settings
from tests.http_servers import EmbeddingServerState, embedding_app, serve_app


def test_toml_file_with_env_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "router.toml"
    config.write_text(
        '[embedder]\nbackend = "ollama"\n[embedder.ollama]\nbase_url = "http://ollama:11434"\n'
        '[routing]\nstrong_model = "llama3:70b"\nweak_model = "llama3"\n'
    )
    monkeypatch.setenv("ROUTER_EMBEDDER__OLLAMA__TIMEOUT_S", "3.5")
    monkeypatch.setenv("ROUTER_ROUTING__STRONG_SHARE", "0.3")
    settings = load_settings(config)
    assert settings.embedder.backend == "ollama"
    assert settings.embedder.ollama.base_url == "http://ollama:11434"
    assert settings.embedder.ollama.model == "all-minilm"  # default kept beside the file's values
    assert settings.embedder.ollama.timeout_s == 3.5
    assert (settings.routing.strong_model, settings.routing.weak_model) == ("llama3:70b", "llama3")
    assert settings.routing.strong_share == 0.3


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.toml not found"):
        load_settings(tmp_path / "nope.toml")


def test_openai_variables_do_not_configure_the_router(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-ambient")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://elsewhere/v1")
    settings = load_settings()
    assert settings.embedder.backend == "local"
    assert settings.embedder.openai.base_url == "https://api.openai.com/v1"
    assert settings.embedder.openai.resolve_api_key() is None


async def test_dimension_mismatch_stops_start_up_naming_both_values(local_embedder) -> None:
    state = EmbeddingServerState(embed=local_embedder.embed_sync, dim=256)  # "another model"
    async with serve_app(embedding_app(state)) as url:
        settings = router_settings(embedder={"backend": "openai", "openai": {"base_url": f"{url}/v1", "model": "all-minilm"}})
        with pytest.raises(ConfigError) as info:
            await build_router(settings)
    message = str(info.value)
    assert "gives 256" in message and "expects 384" in message and "embedder.openai.model" in message


async def test_unreachable_embedder_at_start_up_says_how_to_start_anyway() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    settings = router_settings(embedder={"backend": "ollama", "ollama": {"base_url": url}})
    with pytest.raises(ConfigError, match=rf"{url}/api/embed is unreachable.*set embedder\.ollama\.dim"):
        await build_router(settings)


async def test_unknown_scorer_model_in_mapping_is_a_config_error() -> None:
    settings = router_settings(routing={"models": [{"name": "qwen", "scorer_model": "qwen-72b"}]})
    with pytest.raises(ConfigError, match=r"routing.models\[0\].scorer_model: 'qwen-72b' is not a model of scorer"):
        await build_router(settings)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "router_service", *args],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("ROUTER_")}, **(env or {})},
    )


def test_route_command_prints_the_decision_as_json() -> None:
    result = run_cli("route", "Write a sonnet about entropy.", "--threshold", "0")
    assert result.returncode == 0, result.stderr
    decision = json.loads(result.stdout)
    assert decision["model"] == "llama3.1:8b" and decision["routed_strong"] is True
    assert decision["threshold"] == 0.0 and 0 < decision["score"] < 1


def test_help_lists_the_commands() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("serve", "route", "build-embedder", "train", "calibrate", "eval"):
        assert command in result.stdout
    assert "ROUTER_" in run_cli("serve", "--help").stdout


def test_bad_config_exits_2_with_the_setting_named() -> None:
    result = run_cli("route", "hi", env={"ROUTER_EMBEDDER__BACKEND": "pigeon"})
    assert result.returncode == 2
    assert "embedder.backend" in result.stderr and "Traceback" not in result.stderr


def test_generated_protobuf_code_is_in_sync() -> None:
    result = subprocess.run(
        [sys.executable, "protos/generate.py", "--check"], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_command_line_overrides_are_validated_like_the_file() -> None:
    result = run_cli("serve", "--port", "70000")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "server.port" in result.stderr and "65535" in result.stderr and "command line" in result.stderr


def test_a_toml_syntax_error_names_the_file_line_and_column(tmp_path: Path) -> None:
    config = tmp_path / "router.toml"
    config.write_text('[server]\nport = 50051\nhost = "0.0.0.0\n')
    result = run_cli("route", "hi", "--config", str(config))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert str(config) in result.stderr and "line 3" in result.stderr and "column" in result.stderr


def test_a_mistyped_env_variable_is_named_at_start() -> None:
    """A typo in the section name was silently ignored (pydantic-settings never sees it); now it is named."""
    result = run_cli("route", "hi", env={"ROUTER_EMBEDER__BACKEND": "static"})
    assert result.returncode == 0, result.stderr
    assert "ROUTER_EMBEDER__BACKEND names no setting" in result.stderr
    nested = run_cli("route", "hi", env={"ROUTER_SERVER__PORTT": "1"})  # inside a section: refused outright
    assert nested.returncode == 2 and "ROUTER_SERVER__PORTT names no setting" in nested.stderr


async def test_a_port_held_by_another_router_is_refused() -> None:
    from router_service.server import build_router

    first = await build_router(router_settings())
    try:
        with pytest.raises(ConfigError) as refused:
            await build_router(router_settings(server={"host": "127.0.0.1", "port": first.port}))
        message = str(refused.value)  # issue #27: gRPC's own text ("set GRPC_VERBOSITY=debug") pointed nowhere
        assert f"cannot listen on 127.0.0.1:{first.port} for gRPC" in message and "another instance" in message
        assert "ROUTER_SERVER__PORT" in message and "--router-config" in message and "GRPC_VERBOSITY" not in message
    finally:
        await first.stop()


def test_tls_flags_of_a_client_command_are_named_in_its_errors() -> None:
    missing = run_cli("health", "--address", "127.0.0.1:1", "--tls-ca", "/nonexistent/ca.pem")
    assert missing.returncode == 2 and "--tls-ca: /nonexistent/ca.pem does not exist" in missing.stderr
    half = run_cli("route", "hi", "--address", "127.0.0.1:1", "--tls-cert", "/x.pem")
    assert half.returncode == 2 and "--tls-cert and --tls-key need --tls-ca" in half.stderr


async def test_route_at_the_wrong_port_says_what_answered() -> None:
    """Issue #27: the gateway's port gave "UNIMPLEMENTED: Method not found!"; a closed port "answered UNAVAILABLE"."""
    from gateway_service.server import build_gateway
    from tests.gateway.conftest import gateway_settings

    gateway = await build_gateway(gateway_settings(closed_port(), "http://127.0.0.1:9", "http://127.0.0.1:9"))
    try:
        wrong = await asyncio.to_thread(run_cli, "route", "hi", "--address", f"127.0.0.1:{gateway.grpc_port}")
    finally:
        await gateway.stop()
    closed = await asyncio.to_thread(run_cli, "route", "hi", "--address", f"127.0.0.1:{closed_port()}")
    assert wrong.returncode != 0 and "serves another gRPC service, not the router's" in wrong.stderr, wrong.stderr
    assert closed.returncode != 0 and "nothing answered at 127.0.0.1:" in closed.stderr, closed.stderr


def test_a_typo_names_the_key_and_the_nearest_one(tmp_path: Path) -> None:
    """Issue #27: raw pydantic text (and its link); a nested env typo said "it is ignored", then refused to start."""
    config = tmp_path / "router.toml"
    config.write_text("[server]\nprot = 50051\n")
    in_file = run_cli("route", "hi", "--config", str(config))
    assert in_file.returncode == 2 and f"server.prot: no such setting in {config}; did you mean server.port?" in in_file.stderr
    assert "pydantic" not in in_file.stderr and "Traceback" not in in_file.stderr
    in_env = run_cli("route", "hi", env={"ROUTER_SERVER__PROT": "1"})
    assert in_env.returncode == 2 and "did you mean ROUTER_SERVER__PORT?" in in_env.stderr
    assert "it is ignored" not in in_env.stderr  # it is refused, and says only that
