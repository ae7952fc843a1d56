"""Coming from RouteLLM: its model names, its server's flags and errors, its Controller, an imported MF.

Real router and gateway, real test upstreams in OpenAI's wire format on real sockets.
The seed-style command against the real llama.cpp server is in tests/e2e.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import openai
import pytest

from routellm_compat.controller import Controller, RoutingError
from routellm_compat.models import resolve_models, upstream_settings
from routellm_compat.server import main
from router_service.errors import ConfigError
from router_service.routellm_import import ROUTELLM_MODEL_IDS
from tests.http_servers import EmbeddingServerState, embedding_app, serve_app_in_thread
from tests.llm_servers import LLMServerState, llm_app
from tests.router.test_routellm_import import routellm_win_rate, write_checkpoint


def test_litellm_style_names_map_to_upstreams() -> None:
    seed = resolve_models({"strong": "llama3:70b", "weak": "llama3"}, "http://localhost:11434/v1/", "ollama", {})
    assert [(m.provider, m.base_url, m.api_key) for m in seed.values()] == [("openai", "http://localhost:11434/v1", "ollama")] * 2
    assert upstream_settings(seed) == [{"name": "openai-1", "provider": "openai", "base_url": "http://localhost:11434/v1",
                                        "models": ["llama3:70b", "llama3"], "api_key": "ollama", "url_named_as": "--base-url"}]
    # RouteLLM's local-models guide: GPT-4 and Ollama's own API. OPENAI_API_KEY only for GPT-4's completions.
    guide = resolve_models({"strong": "gpt-4-1106-preview", "weak": "ollama_chat/llama3"}, None, None, {"OPENAI_API_KEY": "sk"})
    assert (guide["strong"].provider, guide["strong"].base_url, guide["strong"].api_key_env) == (
        "openai", "https://api.openai.com/v1", "OPENAI_API_KEY")
    assert (guide["weak"].provider, guide["weak"].name, guide["weak"].base_url, guide["weak"].api_key_env) == (
        "ollama", "llama3", "http://localhost:11434", None)
    both_ollama = resolve_models({"strong": "ollama_chat/llama3:70b", "weak": "ollama/llama3"}, "http://gpu:11434/v1", None, {})
    assert {m.base_url for m in both_ollama.values()} == {"http://gpu:11434"}
    proxied = resolve_models({"strong": "openai/big", "weak": "openai/small"}, "http://vllm:8000/v1", "k", {})
    assert [m.name for m in proxied.values()] == ["big", "small"]


@pytest.mark.parametrize(("argv", "message"), [
    (["--routers", "bert"], "--routers bert: one of RouteLLM's, but not served here; supported: mf"),
    (["--routers", "mf", "--strong-model", "llama3", "--base-url", "http://127.0.0.1:9/v1"],
     "--weak-model anyscale/mistralai/Mixtral-8x7B-Instruct-v0.1: LiteLLM's 'anyscale' provider is not spoken here"),
    (["--strong-model", "gpt-4-1106-preview", "--weak-model", "ollama_chat/llama3"],
     "--strong-model gpt-4-1106-preview is an OpenAI model (no prefix, no --base-url), so its completions need OPENAI_API_KEY"),
    (["--strong-model", "openai/a", "--weak-model", "openai/b"], "openai/NAME is an OpenAI-compatible server: give its --base-url"),
])
def test_unsupported_flags_and_names_get_one_line_naming_what_is_supported(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_a_checkpoint_named_by_hub_id_or_missing_its_embedding_key_says_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("mf:\n  checkpoint_path: routellm/mf_gpt4_augmented\n")
    common = ["--strong-model", "a", "--weak-model", "b", "--base-url", "http://127.0.0.1:9/v1", "--config", str(config)]
    assert main(common) == 2
    assert "huggingface-cli download routellm/mf_gpt4_augmented --local-dir DIR" in capsys.readouterr().err
    write_checkpoint(tmp_path / "ckpt")
    config.write_text(f"mf:\n  checkpoint_path: {tmp_path / 'ckpt'}\n")
    assert main(common) == 2
    assert "give --embedding-api-key-env VAR" in capsys.readouterr().err


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[LLMServerState, str]]:
    state = LLMServerState()
    with serve_app_in_thread(llm_app(state)) as url:
        yield state, url


def test_controller_is_routellm_s_with_one_changed_import(
    upstream: tuple[LLMServerState, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    state, url = upstream
    monkeypatch.setenv("OPENAI_API_KEY", "sk-ambient-junk")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://junk.invalid/v1")
    with Controller(routers=["mf"], strong_model="openai/big-model", weak_model="openai/small-model",
                    api_base=f"{url}/v1", api_key="sk-upstream") as client:
        response = client.chat.completions.create(
            model="router-mf-0.11593", messages=[{"role": "user", "content": "Prove that sqrt(2) is irrational."}]
        )
        assert response.choices[0].message.content == "Hello, world!"
        assert response.model in ("big-model", "small-model")
        streamed = client.chat.completions.create(
            router="mf", threshold=0.5, messages=[{"role": "user", "content": "hi"}], stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == "Hello, world!"
        answer = asyncio.run(client.chat.completions.acreate(model="router-mf-1.0", messages=[{"role": "user", "content": "hi"}]))
        assert answer.model == "small-model"  # threshold 1: weak, whatever the prompt
        assert client.route("hi", "mf", 0.0) == "openai/big-model"  # RouteLLM's route names the pair as given
        assert client.route("hi", "mf", 1.0) == "openai/small-model"
        assert sum(client.model_counts["mf"].values()) == 2
        with pytest.raises(RoutingError, match="Invalid router bert"):
            client.chat.completions.create(model="router-bert-0.5", messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(RoutingError, match=r"Threshold must be a float between 0\.0 and 1\.0"):
            client.route("hi", "mf", 1.5)
    sent = [r for r in state.requests if r["path"] == "/v1/chat/completions"]
    assert {r["headers"]["authorization"] for r in sent} == {"Bearer sk-upstream"}  # never the ambient key


def unit_vector(text: str) -> np.ndarray:
    """A fixed 1536-d unit vector per text: the test's stand-in for text-embedding-3-small."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    vector = np.random.default_rng(seed).normal(size=1536)
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def test_an_imported_routellm_checkpoint_routes_as_routellm_would_at_its_thresholds(
    upstream: tuple[LLMServerState, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, url = upstream
    tensors = write_checkpoint(tmp_path / "ckpt")
    monkeypatch.setenv("EMBED_KEY", "sk-embed")
    embedder = EmbeddingServerState(embed=lambda texts: np.stack([unit_vector(t) for t in texts]),
                                    model="text-embedding-3-small", required_key="sk-embed")
    prompts = [f"prompt number {i}: tell me about topic {i * 7}" for i in range(12)]
    strong, weak = ROUTELLM_MODEL_IDS.index("gpt-4-1106-preview"), ROUTELLM_MODEL_IDS.index("mixtral-8x7b-instruct-v0.1")
    rates = [routellm_win_rate(tensors, unit_vector(p), strong, weak) for p in prompts]
    threshold = float(np.median(rates))
    with serve_app_in_thread(embedding_app(embedder)) as embed_url, Controller(
        routers=["mf"], strong_model="openai/big", weak_model="openai/small", api_base=f"{url}/v1",
        config={"mf": {"checkpoint_path": str(tmp_path / "ckpt")}},
        embedding_base_url=f"{embed_url}/v1", embedding_api_key_env="EMBED_KEY",
    ) as client:
        chosen = [client.route(p, "mf", threshold) for p in prompts]
        with openai.OpenAI(base_url=client.base_url, api_key="x", max_retries=0) as other, \
                pytest.raises(openai.BadRequestError, match="no calibrated thresholds"):  # a share means nothing yet
            other.chat.completions.create(model="router", messages=[{"role": "user", "content": "hi"}])
    expected = ["openai/big" if rate >= threshold else "openai/small" for rate in rates]
    assert chosen == expected and 0 < expected.count("openai/big") < len(prompts)


def listening_addresses(port: int) -> set[str]:
    """The addresses local sockets listen on at ``port`` (/proc/net/tcp and tcp6, state 0A: LISTEN)."""
    import ipaddress

    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                raw = bytes.fromhex(address)
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # each 32-bit word is little-endian
                ip = ipaddress.ip_address(words)
                mapped = getattr(ip, "ipv4_mapped", None)
                found.add(str(mapped or ip))
    return found


async def test_only_the_routellm_http_port_listens_beyond_loopback() -> None:
    """Issue #28.10: the gateway's gRPC API (no key, relaying to the paid upstream with the operator's key)
    listened on --host (0.0.0.0): now only the HTTP port RouteLLM's server had does."""
    from routellm_compat.stack import RouteLLMOptions, running_stack

    with serve_app_in_thread(llm_app(LLMServerState())) as upstream:
        options = RouteLLMOptions(routers=["mf"], strong_model="openai/big", weak_model="openai/small",
                                  base_url=f"{upstream}/v1", api_key="k", host="0.0.0.0", port=0)
        async with running_stack(options) as stack:
            http, grpc_, router = stack.gateway.http_port, stack.gateway.grpc_port, stack.router.port
            assert listening_addresses(http) == {"0.0.0.0"}
            for port in (grpc_, router):
                assert listening_addresses(port) and listening_addresses(port) <= {"127.0.0.1", "::1"}, listening_addresses(port)


def test_its_errors_name_its_own_flags(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue #27: errors named upstreams[openai-1].base_url and server.http_port, settings its user never wrote."""
    import socket

    from routellm_compat.models import resolve_models, upstream_settings

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = ["--strong-model", "openai/a", "--weak-model", "openai/b", "--base-url", "http://127.0.0.1:9/v1",
                "--host", "127.0.0.1", "--port", str(port)]
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err and "change --port or --host" in err, err
    assert "server.http_port" not in err
    (upstream,) = upstream_settings(resolve_models({"strong": "openai/a", "weak": "openai/b"}, "http://h:1/v1", None, {}))
    from gateway_service.config import UpstreamSettings

    assert UpstreamSettings(**upstream).url_setting == "--base-url"
    assert "huggingface-cli download routellm/mf_gpt4_augmented" in _import_error("routellm/mf_gpt4_augmented")


def _import_error(checkpoint: str) -> str:
    from router_service.errors import ConfigError
    from router_service.routellm_import import import_routellm

    with pytest.raises(ConfigError) as refused:
        import_routellm(Path(checkpoint), Path("/nonexistent/out.onnx"))
    return str(refused.value)


def test_errors_name_the_url_setting_as_the_user_gave_it() -> None:
    """#35: `--alt-base-url` (RouteLLM's first releases) and the Controller's `api_base` against a server that fails
    said "Check --base-url", a flag the user never typed."""
    from gateway_service.config import UpstreamSettings
    from routellm_compat.server import parser

    assert parser().parse_args(["--alt-base-url", "http://h:1/v1"]).base_url_named == "--alt-base-url"
    assert parser().parse_args(["--base-url", "http://h:1/v1"]).base_url_named == "--base-url"
    for named in ("--alt-base-url", "api_base"):
        (upstream,) = upstream_settings(resolve_models({"strong": "openai/a", "weak": "openai/b"}, "http://h:1/v1", None,
                                                       {}, named), named)
        assert UpstreamSettings(**upstream).url_setting == named
    with pytest.raises(ConfigError, match="give its api_base"):
        resolve_models({"strong": "openai/a", "weak": "openai/b"}, None, None, {}, "api_base")


def test_the_controller_against_a_dead_server_names_api_base() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with Controller(routers=["mf"], strong_model="openai/big", weak_model="openai/small",
                    api_base=f"http://127.0.0.1:{port}/v1", api_key="k") as client:
        with pytest.raises(openai.APIStatusError) as failed:
            client.chat.completions.create(model="router-mf-0.5", messages=[{"role": "user", "content": "hi"}])
    said = str(failed.value)
    assert "api_base" in said and "--base-url" not in said, said
