"""deploy/monitoring checked offline: the dashboards, Grafana's provisioning and the scrape configs agree
with each other, with the compose stack and Kubernetes manifests, and with the services' settings."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway_service.config import load_settings as load_gateway_settings
from router_service.config import load_settings as load_router_settings
from tests.deploy.monitoring import DASHBOARDS, MONITORING, dashboard, panels, queries
from tests.deploy.test_deploy_files import COMPOSE, DEPLOY, OVERLAYS, tool

PROMTOOL = shutil.which("promtool")
ALERTS = MONITORING / "alerts.yml"


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
    for rules in config["rule_files"]:  # relative to the config file, in the container as here
        assert prometheus_files[f"/etc/prometheus/{rules}"] == MONITORING / rules
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


def fires(at: str, alert: str, labels: dict[str, str], summary: str, description: str) -> dict[str, Any]:
    """A promtool alert_rule_test: at ``at``, ``alert`` fires once, with these labels and annotations."""
    annotations = {"summary": summary, "description": description}
    return {"eval_time": at, "alertname": alert, "exp_alerts": [{"exp_labels": labels, "exp_annotations": annotations}]}


@pytest.mark.skipif(PROMTOOL is None, reason="needs promtool (Debian's prometheus; .ci/run installs it)")
def test_the_alerting_rules_load_and_fire_when_they_should(tmp_path: Path) -> None:
    """promtool's own rule tests, on series written here: each alert fires after its `for`, and not before."""
    assert PROMTOOL is not None
    checked = subprocess.run([PROMTOOL, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    host = 'gateway_upstream_host_up{upstream="ollama",host="http://gpu-1:11434",instance="gw-1"}'
    other = 'gateway_upstream_host_up{upstream="ollama",host="http://gpu-2:11434",instance="gw-1"}'
    shares = 'router_strong_share_{}{{scorer="difficulty",share="50",instance="router-1"}}'
    cases = {
        "rule_files": [str(ALERTS)],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                {"series": host, "values": "1 1 0x10"},  # ejected from minute 2 on
                {"series": other, "values": "1x12"},
                {"series": 'gateway_requests_total{api="openai/chat",outcome="ok"}', "values": "0+90x20"},
                {"series": 'gateway_requests_total{api="openai/chat",outcome="UpstreamUnreachable"}', "values": "0+10x20"},
                {"series": 'router_shed_prompts_total{reason="queue_full"}', "values": "0 0 0+5x20"},
                {"series": shares.format("realised"), "values": "0.5x10 0.7x40"},
                {"series": shares.format("asked"), "values": "0.5x50"},
                {"series": 'up{job="router",instance="router-1"}', "values": "1 1 1 0x5"},
                {"series": 'gateway_budget_unenforced_total{instance="gw-1"}', "values": "0x20 0+4x10"},  # from 20m
                {"series": 'gateway_redis_up{instance="gw-1"}', "values": "1x20 0x10"},
                {"series": 'gateway_redis_up{instance="gw-2"}', "values": "1x30"},
            ],
            "alert_rule_test": [
                {"eval_time": "5m", "alertname": "RoutestackUpstreamHostDown", "exp_alerts": []},  # not yet 5m
                fires("8m", "RoutestackUpstreamHostDown",
                      {"severity": "warning", "upstream": "ollama", "host": "http://gpu-1:11434"},
                      "upstream ollama: host http://gpu-1:11434 ejected for 5 minutes",
                      "The gateway keeps ejecting this host (failures in a row, or its health check). The routing "
                      "page (/ui) shows its last error."),
                {"eval_time": "8m", "alertname": "RoutestackUpstreamAllHostsDown", "exp_alerts": []},  # one is up
                fires("15m", "RoutestackServerErrors", {"severity": "warning"},
                      "10% of gateway requests fail on the server side",
                      "Upstream failures, internal errors or an unavailable budget store (client errors such as 400 "
                      "and 429 are not counted). The access lines name each cause."),
                fires("10m", "RoutestackRouterShedding", {"severity": "warning", "reason": "queue_full"},
                      "the router sheds prompts (queue_full)",
                      "More prompts than the router embeds in time: add router replicas, or a faster embedder tier."),
                {"eval_time": "35m", "alertname": "RoutestackStrongShareDrift", "exp_alerts": []},  # 25m of drift
                fires("45m", "RoutestackStrongShareDrift", {"severity": "warning", "scorer": "difficulty", "share": "50"},
                      "scorer difficulty: the strong share drifts more than 10 points from the 50% asked",
                      "Traffic changed faster than the live threshold follows; the dashboard's share and threshold "
                      "panels show since when."),
                {"eval_time": "20m", "alertname": "RoutestackRedisDown", "exp_alerts": []},
                fires("22m", "RoutestackRedisDown", {"severity": "critical"},
                      "a gateway cannot reach Redis: budgets, rate limits and spend are not fleet-wide",
                      "gateway_redis_up is 0 on at least one replica; its warning names the Redis address and what it "
                      "does meanwhile (redis.on_unavailable)."),
                {"eval_time": "21m", "alertname": "RoutestackBudgetsUnenforced", "exp_alerts": []},  # not yet 2m
                fires("24m", "RoutestackBudgetsUnenforced", {"severity": "critical"},
                      "gateway requests are served without their callers' limits checked",
                      "Redis does not answer and redis.on_unavailable is 'serve': budgets and rate limits are off, each "
                      "such answer flagged x-route-budget-unenforced. Bring Redis back, or set on_unavailable to "
                      "'local' or 'refuse'."),
                fires("6m", "RoutestackTargetDown", {"severity": "critical", "job": "router", "instance": "router-1"},
                      "router at router-1 does not answer Prometheus",
                      "A replica that Prometheus cannot scrape is down or unreachable: check its health probe and logs."),
            ],
        }],
    }
    (tmp_path / "alerts_test.yml").write_text(yaml.safe_dump(cases, sort_keys=False))
    tested = subprocess.run(
        [PROMTOOL, "test", "rules", str(tmp_path / "alerts_test.yml")], capture_output=True, text=True, timeout=60
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_the_prometheusrule_is_generated_from_the_alerting_rules() -> None:
    checked = subprocess.run([sys.executable, str(MONITORING / "generate_rules.py"), "--check"], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


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
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    assert rule["spec"]["groups"] == yaml.safe_load(ALERTS.read_text())["groups"]
    manifest = tmp_path / "manifest.yaml"  # the operator's CRDs aside: the rest against Kubernetes's schemas
    manifest.write_text(yaml.safe_dump_all([d for d in docs if d["kind"] not in ("ServiceMonitor", "PrometheusRule")]))
    result = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "--quiet", str(manifest)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
