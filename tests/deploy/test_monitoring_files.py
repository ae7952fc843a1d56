"""deploy/monitoring checked offline: the dashboards, Grafana's provisioning and the scrape configs agree
with each other, with the compose stack and Kubernetes manifests, and with the services' settings."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway_service.config import load_settings as load_gateway_settings
from router_service.config import load_settings as load_router_settings
from tests.deploy.monitoring import DASHBOARDS, MONITORING, dashboard, panels, queries
from tests.deploy.test_deploy_files import COMPOSE, DEPLOY, OVERLAYS, tool

PROMTOOL = shutil.which("promtool")


def compose_services() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())["services"]
    return services


def mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> the host path it mounts (relative to the compose file)."""
    found = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            found[target] = (COMPOSE.parent / source).resolve()
    return found


def test_every_panel_queries_the_dashboard_data_source_and_panels_do_not_overlap() -> None:
    assert DASHBOARDS, "deploy/monitoring/dashboards holds no dashboard"
    for path in DASHBOARDS:
        board = dashboard(path)
        assert board["uid"] and board["title"] and board["schemaVersion"] >= 36
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
        ids, cells = set(), set()
        for panel in panels(board):
            assert panel["id"] not in ids, f"{path.name}: panel id {panel['id']} twice"
            ids.add(panel["id"])
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24
            for x in range(grid["x"], grid["x"] + grid["w"]):
                for y in range(grid["y"], grid["y"] + grid["h"]):
                    assert (x, y) not in cells, f"{path.name}: {panel['title']!r} overlaps another panel"
                    cells.add((x, y))
            if panel["type"] == "row":
                continue
            assert panel.get("description"), f"{path.name}: {panel['title']!r} says nothing about what it shows"
            assert panel["datasource"]["uid"] == "${datasource}"  # usable in any Grafana, on any data source name
            assert panel["targets"] and all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"])
    assert len(queries()) >= 30


def test_compose_brings_prometheus_and_grafana_provisioned_from_deploy_monitoring() -> None:
    services = compose_services()
    router = load_router_settings(DEPLOY / "compose" / "router.toml")
    gateway = load_gateway_settings(DEPLOY / "compose" / "gateway.toml")
    prometheus_files = mounts(services["prometheus"])
    config_path = prometheus_files["/etc/prometheus/prometheus.yml"]
    assert config_path == MONITORING / "prometheus.yml"
    config = yaml.safe_load(config_path.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["router"]["static_configs"][0]["targets"] == [f"router:{router.server.metrics_port}"]
    (gateways,) = jobs["gateway"]["dns_sd_configs"]  # every replica of --scale gateway=N
    assert gateways["names"] == ["gateway"] and gateways["port"] == gateway.server.http_port
    grafana_files = mounts(services["grafana"])
    provisioning, boards = grafana_files["/etc/grafana/provisioning"], grafana_files["/var/lib/grafana/dashboards"]
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090" and source["isDefault"]
    assert "9090:9090" in services["prometheus"]["ports"] and "3000:3000" in services["grafana"]["ports"]
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "routestack.yaml").read_text())["providers"]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards" and boards == MONITORING / "dashboards"
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (boards / Path(home).name).is_file() and home.startswith("/var/lib/grafana/dashboards/")


@pytest.mark.skipif(PROMTOOL is None, reason="needs promtool (Debian's prometheus; .ci/run installs it)")
def test_promtool_accepts_the_scrape_config() -> None:
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "check", "config", "--syntax-only", str(MONITORING / "prometheus.yml")],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_kubernetes_component_scrapes_both_services_and_ships_the_dashboards(overlay: str, tmp_path: Path) -> None:
    """An overlay with deploy/monitoring as a component: valid manifests, ServiceMonitors that select a
    Service and name one of its ports, and the dashboards in a ConfigMap Grafana's sidecar loads."""
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(DEPLOY / "k8s" / "overlays" / overlay, tmp_path)],
        "components": [os.path.relpath(MONITORING, tmp_path)],
    }))
    out = subprocess.run([tool("kubectl"), "kustomize", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    monitors = [d for d in docs if d["kind"] == "ServiceMonitor"]
    assert {m["metadata"]["name"] for m in monitors} == {"router", "gateway"}
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    for monitor in monitors:
        wanted = monitor["spec"]["selector"]["matchLabels"]
        selected = [s for s in services.values() if wanted.items() <= s["metadata"].get("labels", {}).items()]
        assert [s["metadata"]["name"] for s in selected] == [monitor["metadata"]["name"]]
        ports = {p["name"] for p in selected[0]["spec"]["ports"]}
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= ports
    (config_map,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "routestack-dashboards"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    for path in DASHBOARDS:
        assert json.loads(config_map["data"][path.name]) == dashboard(path)
    manifest = tmp_path / "manifest.yaml"  # the ServiceMonitor CRD is the operator's: the rest against Kubernetes
    manifest.write_text(yaml.safe_dump_all([d for d in docs if d["kind"] != "ServiceMonitor"]))
    result = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "--quiet", str(manifest)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
