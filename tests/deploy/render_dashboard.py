"""Draw a shipped dashboard from a real Prometheus, for README's picture: Grafana is not packaged for Debian,
so matplotlib lays the panels out as the dashboard's gridPos does and plots each panel's own queries (range
queries for time series, instant ones for stats and tables), with their legends and units."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import httpx

from tests.deploy.monitoring import evaluable

__all__ = ["render_dashboard"]

UNITS = {"percentunit": ("%", 100.0), "currencyUSD": ("$", 1.0), "s": ("s", 1.0), "reqps": ("/s", 1.0)}
COLOURS = ["#7eb26d", "#eab839", "#6ed0e0", "#ef843c", "#e24d42", "#1f78c1", "#ba43a9", "#705da0", "#508642", "#cca300"]


def _legend(fmt: str, metric: dict[str, str], expr: str) -> str:
    if not fmt:
        return ", ".join(f"{k}={v}" for k, v in sorted(metric.items()) if k not in ("job", "instance")) or expr[:40]
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: metric.get(m.group(1), ""), fmt)


def _unit(panel: dict[str, Any], label: str) -> tuple[str, float]:
    """The panel's unit, or the one an override gives the series named ``label``."""
    config = panel.get("fieldConfig", {})
    unit = config.get("defaults", {}).get("unit", "")
    for override in config.get("overrides", []):
        if override["matcher"] == {"id": "byName", "options": label}:
            unit = next((p["value"] for p in override["properties"] if p["id"] == "unit"), unit)
    return UNITS.get(unit, ("", 1.0))


async def _series(client: httpx.AsyncClient, base: str, target: dict[str, Any], start: float, end: float,
                  step: float, span: str) -> list[tuple[str, list[float], list[float]]]:
    expr = evaluable(target["expr"], rate_interval=f"{5 * step:.0f}s", dashboard_range=span)
    answer = await client.get(f"{base}/api/v1/query_range", params={"query": expr, "start": start, "end": end, "step": step})
    found = []
    for result in answer.json()["data"]["result"]:
        times = [float(t) - start for t, _ in result["values"]]
        values = [float(v) for _, v in result["values"]]
        found.append((_legend(target.get("legendFormat", ""), result["metric"], target["expr"]), times, values))
    return found


async def _instant(client: httpx.AsyncClient, base: str, target: dict[str, Any], span: str) -> list[tuple[str, float]]:
    expr = evaluable(target["expr"], rate_interval=span, dashboard_range=span)
    answer = await client.get(f"{base}/api/v1/query", params={"query": expr})
    return [(_legend(target.get("legendFormat", ""), r["metric"], target["expr"]), float(r["value"][1]))
            for r in answer.json()["data"]["result"]]


async def render_dashboard(board: dict[str, Any], base: str, start: float, end: float, out: Path) -> None:
    """``board``'s panels over [start, end] from the Prometheus at ``base``, as one PNG at ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    span = f"{math.ceil(end - start) + 5}s"
    step = max(2.0, (end - start) / 100)
    panels = board["panels"]
    rows_total = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    unit_w, unit_h = 0.62, 0.30  # inches a grid column, a grid row: Grafana's proportions at 1280 px wide
    figure = plt.figure(figsize=(24 * unit_w, rows_total * unit_h + 0.8), facecolor="#111217")
    height = rows_total * unit_h + 0.8
    figure.text(0.01, 1 - 0.35 / height, board["title"], color="#ccccdc", fontsize=15, weight="bold", va="center")

    def box(grid: dict[str, int]) -> tuple[float, float, float, float]:
        left, width = grid["x"] / 24, grid["w"] / 24
        top = (0.8 + grid["y"] * unit_h) / height
        return (left + 0.006, 1 - top - grid["h"] * unit_h / height + 0.004, width - 0.012, grid["h"] * unit_h / height - 0.012)

    async with httpx.AsyncClient(timeout=20) as client:
        for panel in panels:
            grid = panel["gridPos"]
            if panel["type"] == "row":
                figure.text(grid["x"] / 24 + 0.006, 1 - (0.8 + (grid["y"] + 0.5) * unit_h) / height, panel["title"],
                            color="#ccccdc", fontsize=12, weight="bold", va="center")
                continue
            axes = figure.add_axes(box(grid), facecolor="#181b1f")
            axes.set_title(panel["title"], color="#ccccdc", fontsize=9.5, loc="left")
            for spine in axes.spines.values():
                spine.set_color("#2c3235")
            axes.tick_params(colors="#8e8e8e", labelsize=7)
            suffix, scale = _unit(panel, "")
            if panel["type"] == "timeseries":
                drawn = 0
                for target in panel.get("targets", []):
                    for label, times, values in await _series(client, base, target, start, end, step, span):
                        axes.plot(times, [v * scale for v in values], label=label, linewidth=1.3,
                                  color=COLOURS[drawn % len(COLOURS)])
                        drawn += 1
                axes.grid(color="#2c3235", linewidth=0.6)
                axes.set_xlabel("seconds into the run", color="#8e8e8e", fontsize=7)
                if suffix:
                    axes.set_ylabel(suffix, color="#8e8e8e", fontsize=7)
                if drawn:
                    axes.legend(fontsize=6, loc="upper left", ncols=2, framealpha=0.3, labelcolor="#ccccdc",
                                facecolor="#181b1f", edgecolor="#2c3235")
            else:  # stat and table: the latest values as text
                axes.set_xticks([])
                axes.set_yticks([])
                lines = []
                for target in panel.get("targets", []):
                    for label, value in await _instant(client, base, target, span):
                        suffix, scale = _unit(panel, label)
                        if panel["type"] == "table":
                            lines.append(label)
                        elif suffix == "$":
                            lines.append(f"{label}: ${value:.4f}")
                        else:
                            lines.append(f"{label}: {value * scale:.4g}{suffix}")
                big = panel["type"] == "stat" and len(lines) <= 3
                axes.text(0.04, 0.9, "\n".join(lines[:8]), color="#73bf69" if big else "#ccccdc",
                          fontsize=13 if big else 8, va="top", transform=axes.transAxes, linespacing=1.6)
    figure.savefig(out, dpi=80, facecolor=figure.get_facecolor())
    plt.close(figure)
