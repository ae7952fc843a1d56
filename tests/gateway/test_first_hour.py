"""The first hour's traps (#35): each error names what the user actually set, or did not."""

from __future__ import annotations

import logging

import httpx
import pytest

from gateway_service.config import GatewaySettings
from gateway_service.server import build_gateway
from tests.conftest import closed_port
from tests.http_servers import serve_app
from tests.llm_servers import LLMServerState, llm_app


async def test_an_api_key_env_that_is_not_set_is_named_at_start_and_in_the_error(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the variable unset, no warning came; a 401 then said to set api_key_env, which was set."""
    monkeypatch.delenv("MY_SERVER_KEY", raising=False)
    caplog.set_level(logging.WARNING)
    state = LLMServerState(fail_status=401)
    async with serve_app(llm_app(state)) as url:
        settings = GatewaySettings(
            server={"host": "127.0.0.1", "http_port": 0, "grpc_port": 0, "grace_s": 2},
            router={"address": f"127.0.0.1:{closed_port()}", "timeout_s": 0.2},
            upstreams=[{"name": "mine", "provider": "openai", "base_url": f"{url}/v1", "models": ["m"],
                        "api_key_env": "MY_SERVER_KEY"}],
            default_model="m", fallback_model=None,
        )
        gateway = await build_gateway(settings)
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                answer = await http.post(f"http://127.0.0.1:{gateway.http_port}/v1/chat/completions",
                                         json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        finally:
            await gateway.stop()
    warned = [r.getMessage() for r in caplog.records if "MY_SERVER_KEY" in r.getMessage()]
    assert warned and "not set" in warned[0], [r.getMessage() for r in caplog.records]
    said = answer.json()["error"]["message"]
    assert answer.status_code == 502 and "MY_SERVER_KEY, which is not set" in said, said


async def test_a_rule_s_decision_says_so_instead_of_a_zero_score(stack, caplog: pytest.LogCaptureFixture) -> None:
    """Rule-decided routes printed "score": 0.0 and "scorer_name": ""; /v1/route answered rule "" for none, and a
    refused body's access line had "requested": ""."""
    import json

    from router_service.client import decision_dict
    from router_service.config import RouterSettings
    from router_service.domain import RouteQuery
    from router_service.engine import open_engine

    async with open_engine(RouterSettings(embedder={"backend": "static"})) as engine:
        ruled, scored = await engine.route([
            RouteQuery(prompt="### Task:\nGenerate a concise title for the chat history."), RouteQuery(prompt="hi"),
        ])
    shown = decision_dict(ruled)
    assert shown["score"] is None and shown["scorer_name"] is None and shown["decided_by"] == "rule 'client-utility': not scored"
    assert decision_dict(scored)["rule"] is None and decision_dict(scored)["score"] > 0
    caplog.set_level(logging.INFO, logger="gateway_service.access")
    async with httpx.AsyncClient(timeout=10) as http:
        hi = await http.post(f"{stack.base_url}/route", json={"model": "router", "messages": [{"role": "user", "content": "hi"}]})
        task = await http.post(f"{stack.base_url}/route", json={"model": "router", "messages": [
            {"role": "user", "content": "### Task:\nGenerate a concise title for the chat history."}]})
        await http.post(f"{stack.base_url}/chat/completions", content=b"{not json")
    assert hi.json()["rule"] is None and hi.json()["score"] > 0 and hi.json()["scorer"] == "difficulty"
    assert task.json()["rule"] == "client-utility" and task.json()["score"] is None and task.json()["scorer"] is None
    refused = [json.loads(r.getMessage()) for r in caplog.records if r.name == "gateway_service.access"][-1]
    assert refused["status"] == 400 and refused["requested"] is None


def test_policies_join_the_defaults_unless_told_to_replace_them() -> None:
    """The README's gateway TOML added a [[policies]] and router-mf-50 from its own examples became a 400."""
    added = GatewaySettings(policies=[{"name": "router-cheap", "strong_share": 0.1}])
    assert [p.name for p in added.policies] == ["router-mf-20", "router-mf-50", "router-mf-80", "router-cheap"]
    same_name = GatewaySettings(policies=[{"name": "router-mf-50", "strong_share": 0.4}])
    assert [(p.name, p.strong_share) for p in same_name.policies][-1] == ("router-mf-50", 0.4)
    assert len(same_name.policies) == 3
    only = GatewaySettings(replace_policies=True, policies=[{"name": "router-cheap", "strong_share": 0.1}])
    assert [p.name for p in only.policies] == ["router-cheap"]


def test_up_says_it_will_not_use_a_configured_router_address() -> None:
    """`[router] address = "router:50051"` (the README's gateway TOML) was silently ignored by `up`."""
    from gateway_service.__main__ import unused_router_address

    said = unused_router_address(GatewaySettings(router={"address": "router:50051"}), "127.0.0.1:50051")
    assert said is not None and "'router:50051' is not used" in said and "gateway-service serve" in said
    assert unused_router_address(GatewaySettings(), "127.0.0.1:50051") is None  # nothing configured
    assert unused_router_address(GatewaySettings(router={"address": "127.0.0.1:6000"}), "127.0.0.1:6000") is None


async def test_up_s_sample_and_next_line_carry_the_key_when_callers_are_on(
    router_app, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With [[callers]], `up --sample` failed its own completion (401) and printed a next: curl line without a key."""
    import gateway_service.__main__ as cli
    from tests.gateway.conftest import gateway_settings

    monkeypatch.setenv("TEAM_KEY", "sk-team-secret")
    caplog.set_level(logging.INFO, logger="gateway_service")
    ollama, other = LLMServerState(), LLMServerState()
    async with serve_app(llm_app(ollama)) as ollama_url, serve_app(llm_app(other)) as openai_url:
        settings = gateway_settings(router_app.port, ollama_url, openai_url,
                                    callers=[{"name": "team", "api_key_env": "TEAM_KEY"}])
        gateway = await build_gateway(settings)
        try:
            await cli._sample(gateway, ["hi"])
        finally:
            await gateway.stop()
    said = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("sample completion from") for m in said), said
    next_line = next(m for m in said if m.startswith("next: curl"))
    assert 'authorization: Bearer $TEAM_KEY' in next_line and "sk-team-secret" not in "".join(said)


def test_the_picture_command_never_writes_over_the_readme_s_pictures(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It overwrote three tracked files in docs/images."""
    from tests.conftest import ROOT
    from tests.pictures import keep_picture

    monkeypatch.setenv("ROUTESTACK_SCREENSHOTS", str(ROOT / "docs" / "images"))
    before = (ROOT / "docs" / "images" / "savings.png").read_bytes()
    with pytest.raises(FileExistsError, match="ROUTESTACK_SCREENSHOTS_REPLACE=1"):
        keep_picture("savings.png", b"\x89PNG not really")
    assert (ROOT / "docs" / "images" / "savings.png").read_bytes() == before
    monkeypatch.setenv("ROUTESTACK_SCREENSHOTS", str(tmp_path / "pictures"))
    assert keep_picture("savings.png", b"\x89PNG") == tmp_path / "pictures" / "savings.png"
