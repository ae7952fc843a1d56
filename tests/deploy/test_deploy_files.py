"""deploy/ validated offline, and checked against the code: every image, port, env variable and config key."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway_service.config import GatewaySettings
from gateway_service.config import load_settings as load_gateway_settings
from router_service.config import RouterSettings
from router_service.config import load_settings as load_router_settings
from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose" / "docker-compose.yml"
OVERLAYS = sorted(p.name for p in (DEPLOY / "k8s" / "overlays").iterdir())
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    path = BIN / name if (BIN / name).exists() else shutil.which(name)
    if not path:
        pytest.fail(f"{name} is missing: `make test` installs it with the deploy extra")
    return str(path)


def rendered(overlay: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [tool("kubectl"), "kustomize", str(DEPLOY / "k8s" / "overlays" / overlay)],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_file_matches_the_compose_spec() -> None:
    result = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kustomize_output_matches_kubernetes_schemas(overlay: str, tmp_path: Path) -> None:
    manifest = tmp_path / f"{overlay}.yaml"
    manifest.write_text(yaml.safe_dump_all(rendered(overlay)))
    result = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "--quiet", str(manifest)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    kinds = {doc["kind"] for doc in rendered(overlay)}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ConfigMap"} <= kinds


def config_files() -> list[Path]:
    return sorted(DEPLOY.rglob("*.toml"))


@pytest.mark.parametrize("path", config_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_config_file_loads_with_the_services_settings(path: Path) -> None:
    """extra="forbid": a key the code does not know fails here."""
    if path.name.startswith("router"):
        load_router_settings(path)
    else:
        load_gateway_settings(path)


def env_entries() -> list[tuple[str, str, str]]:
    """(where, name, value) for every ROUTER_/GATEWAY_ variable that deploy/ sets."""
    entries = []
    for name, service in compose()["services"].items():
        env = service.get("environment") or {}
        for key, value in (env.items() if isinstance(env, dict) else (e.split("=", 1) for e in env)):
            entries.append((f"compose:{name}", key, str(value)))
    for overlay in OVERLAYS:
        for doc in rendered(overlay):
            for container in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
                for item in container.get("env", []):
                    entries.append((f"k8s/{overlay}:{doc['metadata']['name']}", item["name"], item.get("value", "")))
    for dockerfile in sorted(DEPLOY.glob("*.Dockerfile")):
        for key, value in re.findall(r"\b((?:ROUTER|GATEWAY)_[A-Z_]+)=(\S+)", dockerfile.read_text()):
            entries.append((dockerfile.name, key, value))
    return [e for e in entries if e[1].startswith(("ROUTER_", "GATEWAY_"))]


@pytest.mark.parametrize(("where", "name", "value"), env_entries())
def test_every_env_variable_is_a_real_setting(where: str, name: str, value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(name, value)
    settings: Any = RouterSettings() if name.startswith("ROUTER_") else GatewaySettings()
    node: Any = settings
    for part in name.split("_", 1)[1].lower().split("__"):
        assert hasattr(node, part), f"{where}: {name} names no setting ({part!r})"
        node = getattr(node, part)
    assert str(node) == value


def test_commands_images_and_ports_agree_with_the_code() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    scripts, version = project["scripts"], project["version"]
    router = load_router_settings(DEPLOY / "compose" / "router.toml")
    gateway = load_gateway_settings(DEPLOY / "compose" / "gateway.toml")
    services = compose()["services"]
    for name in ("router", "gateway"):  # one image per service, built from its own Dockerfile
        service = services[name]
        assert service["image"] == f"routestack-{name}:{version}"
        assert service["build"]["dockerfile"] == f"deploy/{name}.Dockerfile"
        assert (ROOT / service["build"]["dockerfile"]).is_file()
        assert service["command"][0] in scripts
    assert services["router"]["expose"] == [str(router.server.port)]
    assert services["gateway"]["expose"] == [str(gateway.server.http_port), str(gateway.server.grpc_port)]
    assert services["gateway"]["healthcheck"]["test"][1] in scripts
    assert gateway.router.address == f"router:{router.server.port}"
    # One Redis for the budgets of every replica: the compose service and the k8s Service that the configs name.
    assert gateway.redis.url == router.redis.url == "redis://redis:6379/0"
    assert "redis" in services and "redis" in services["gateway"]["depends_on"]
    nginx = (DEPLOY / "compose" / "nginx.conf").read_text()
    assert f"server gateway:{gateway.server.http_port}" in nginx and f"server gateway:{gateway.server.grpc_port}" in nginx
    for name, listens in (
        ("router", {router.server.port}), ("gateway", {gateway.server.http_port, gateway.server.grpc_port})
    ):
        dockerfile = (DEPLOY / f"{name}.Dockerfile").read_text()
        exposed = re.search(r"^EXPOSE (.+)$", dockerfile, re.M)
        assert exposed and set(exposed[1].split()) == {str(p) for p in listens}
        assert re.search(rf'^CMD \["{name}-service", "serve"\]$', dockerfile, re.M)
        assert re.search(rf'^HEALTHCHECK .* CMD \["{name}-service", "health"\]$', dockerfile, re.M)
    for overlay in OVERLAYS:
        docs = rendered(overlay)
        kustomization = yaml.safe_load((DEPLOY / "k8s" / "base" / "kustomization.yaml").read_text())
        assert {(i["name"], i["newTag"]) for i in kustomization["images"]} == {
            ("routestack-router", version), ("routestack-gateway", version)
        }
        ports = {
            (doc["metadata"]["name"], p["containerPort"])
            for doc in docs if doc["kind"] == "Deployment"
            for c in doc["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])
        }
        assert ("router", router.server.port) in ports
        redis_ports = {p["port"] for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "redis"
                       for p in d["spec"]["ports"]}
        assert redis_ports == {6379} and any(d["kind"] == "StatefulSet" for d in docs)
        assert {("gateway", gateway.server.http_port), ("gateway", gateway.server.grpc_port)} <= ports
        for doc in docs:
            if doc["kind"] == "Deployment" and doc["metadata"]["name"] in ("router", "gateway"):
                container = doc["spec"]["template"]["spec"]["containers"][0]
                assert container["image"] == f"routestack-{doc['metadata']['name']}:{version}"
                assert container["command"][0] in scripts


def pulled_models(command: str) -> set[str]:
    """Models named literally; a variable (EXTRA_OLLAMA_MODELS) adds the user's own."""
    return set(re.findall(r"ollama pull ([^\s\"$;|&]+)", command))


def test_pulled_models_are_the_routed_and_served_ones() -> None:
    cases = [
        (" ".join(compose()["services"]["ollama-pull"]["command"]), DEPLOY / "compose"),
        (
            next(d for d in rendered("ollama") if d["kind"] == "Job")["spec"]["template"]["spec"]["containers"][0]["command"][-1],
            DEPLOY / "k8s" / "base",
        ),
    ]
    for command, folder in cases:
        router = load_router_settings(folder / "router.toml")
        gateway = load_gateway_settings(folder / "gateway.toml")
        ollama_models = {m for u in gateway.upstreams if u.provider == "ollama" for m in u.models}
        assert pulled_models(command) == {router.routing.strong_model, router.routing.weak_model} == ollama_models
