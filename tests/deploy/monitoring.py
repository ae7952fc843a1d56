"""The shipped dashboards as the tests read them: every panel's queries."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tests.conftest import ROOT

MONITORING = ROOT / "deploy" / "monitoring"
DASHBOARDS = sorted((MONITORING / "dashboards").glob("*.json"))


@dataclass(frozen=True)
class Query:
    dashboard: str
    panel: str
    ref: str
    expr: str

    def __str__(self) -> str:
        return f"{self.dashboard} / {self.panel} / {self.ref}"


def dashboard(path: Any) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    found = []
    for panel in board["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def queries() -> list[Query]:
    return [
        Query(path.stem, panel["title"], target["refId"], target["expr"])
        for path in DASHBOARDS for panel in panels(dashboard(path)) for target in panel.get("targets", [])
    ]


def evaluable(expr: str, rate_interval: str = "30s", dashboard_range: str = "5m") -> str:
    """The query as Grafana sends it, its variables replaced as Grafana would."""
    return expr.replace("$__rate_interval", rate_interval).replace("$__range", dashboard_range)
