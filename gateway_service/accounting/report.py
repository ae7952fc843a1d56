"""The savings report: GET /v1/spend (a running gateway's, or its JSON saved to a file) as markdown tables and a plot.

The numbers are the spend book's, the same that gateway_spend_usd_total, gateway_routed_spend_usd_total and
gateway_spend_baseline_usd_total count for the dashboard: spend, what routed completions cost, and what they
would have cost on the priciest routable model (all-strong). matplotlib draws the plot (the ``report`` extra),
imported only when a plot is asked for.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service_core.errors import ConfigError

__all__ = ["fetch_spend", "plot_savings", "savings_markdown", "spend_table", "write_report"]

SUMMED = ("requests", "routed", "strong", "spend_usd", "routed_spend_usd", "baseline_usd", "saved_usd")


def fetch_spend(url: str, key_env: str | None) -> dict[str, Any]:
    """GET /v1/spend of the gateway at ``url`` (its HTTP root), with an admin caller's key from ``key_env``."""
    headers = {}
    if key_env:
        key = os.environ.get(key_env)
        if not key:
            raise ConfigError(f"--key-env names {key_env}, which is unset or empty")
        headers["authorization"] = f"Bearer {key}"
    url = url.rstrip("/").removesuffix("/v1") + "/v1/spend"
    try:
        response = httpx.get(url, headers=headers, timeout=10)
    except httpx.HTTPError as exc:
        raise ConfigError(f"could not reach the gateway at {url} ({exc}); give its HTTP root with --url") from None
    if response.status_code != 200:
        raise ConfigError(f"{url} answered HTTP {response.status_code}: {response.text[:300]}")
    try:
        answer = response.json()
    except ValueError:
        raise ConfigError(f"{url} answered something that is not JSON: {response.text[:200]!r}") from None
    return checked(answer, url)


class _Figures(BaseModel):
    model_config = ConfigDict(extra="ignore")

    requests: int = Field(ge=0)
    routed: int = Field(ge=0)
    strong: int = Field(ge=0)
    spend_usd: float = Field(ge=0, allow_inf_nan=False)
    routed_spend_usd: float = Field(ge=0, allow_inf_nan=False)
    baseline_usd: float = Field(ge=0, allow_inf_nan=False)
    saved_usd: float = Field(allow_inf_nan=False)


class _Day(_Figures):
    day: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")
    caller: str


class _Report(BaseModel):
    """GET /v1/spend's answer, as far as the report reads it."""

    model_config = ConfigDict(extra="ignore")

    scope: Literal["fleet", "process"]
    baseline_model: str | None
    callers: dict[str, _Figures]
    days: list[_Day]


def checked(report: Any, source: str) -> dict[str, Any]:
    """The report if it has GET /v1/spend's shape; else one line naming the first field that does not."""
    try:
        _Report.model_validate(report)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the top level"
        more = f" ({exc.error_count()} problems)" if exc.error_count() > 1 else ""
        raise ConfigError(f"{source} is not GET /v1/spend's JSON: {where}: {first['msg']}{more}") from None
    assert isinstance(report, dict)
    return report


def read_spend(path: Path) -> dict[str, Any]:
    """A /v1/spend answer saved to a file (`gateway-service spend --json > spend.json`)."""
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"could not read {path} as GET /v1/spend's JSON: {exc}") from None
    return checked(report, str(path))


def _cell(text: str) -> str:
    """A name as one markdown table cell: its pipes escaped, its line breaks spaces (a caller's name is not markup)."""
    return " ".join(str(text).replace("\\", "\\\\").replace("|", "\\|").split())


def _share(strong: float, routed: float) -> str:
    return f"{strong / routed:.1%}" if routed else "-"


def _rows(entries: list[tuple[str, dict[str, Any]]], label: str) -> list[str]:
    """Markdown rows, one an entry and a total."""
    rows = [
        f"| {label} | requests | routed | strong share | spend $ | routed spend $ | all-strong $ | saved $ |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    totals = dict.fromkeys(SUMMED, 0.0)
    for name, c in entries:
        rows.append(
            f"| {_cell(name)} | {c['requests']:.0f} | {c['routed']:.0f} | {_share(c['strong'], c['routed'])} | {c['spend_usd']:.4f} "
            f"| {c['routed_spend_usd']:.4f} | {c['baseline_usd']:.4f} | {c['saved_usd']:.4f} |"
        )
        for field in totals:
            totals[field] += c[field]
    rows.append(
        f"| **all** | {totals['requests']:.0f} | {totals['routed']:.0f} | {_share(totals['strong'], totals['routed'])} "
        f"| {totals['spend_usd']:.4f} | {totals['routed_spend_usd']:.4f} | {totals['baseline_usd']:.4f} "
        f"| {totals['saved_usd']:.4f} |"
    )
    return rows


def _scope(report: dict[str, Any]) -> str:
    scope = "the whole fleet (Redis)" if report["scope"] == "fleet" else "the gateway process that answered"
    if report["baseline_model"] is None:
        return f"figures of {scope}; no model routing may choose has [[prices]] in the gateway's config: spend is 0"
    return f"figures of {scope}; all-strong: the same tokens on {report['baseline_model']}"


def spend_table(report: dict[str, Any]) -> str:
    """A markdown table, one row per caller and a total."""
    return "\n".join(_rows(list(report["callers"].items()), "caller")) + f"\n\n{_scope(report)}"


def per_day(report: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The report's days (one row per day and caller there) summed per day, oldest first."""
    days: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(SUMMED, 0.0))
    for row in report["days"]:
        for field in SUMMED:
            days[row["day"]][field] += row[field]
    return dict(sorted(days.items()))


def savings_markdown(report: dict[str, Any]) -> str:
    """Per caller, per day, and per day and caller."""
    by_day_caller = [(f"{row['day']} {row['caller']}", row) for row in report["days"]]
    return "\n".join([
        "# Routing savings", "", _scope(report), "",
        "## By caller", "", *_rows(list(report["callers"].items()), "caller"), "",
        "## By day (UTC)", "", *_rows(list(per_day(report).items()), "day"), "",
        "## By day and caller", "", *_rows(by_day_caller, "day, caller"), "",
    ])


def plot_savings(report: dict[str, Any], path: Path) -> None:
    """Spend against the all-strong baseline (bars) and the strong share (line), per day and per caller: a PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display on a server
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("the plot needs matplotlib: pip install 'routestack[report]' (or give --no-plot)") from None
    days = per_day(report)
    callers = {name: c for name, c in report["callers"].items() if c["routed"]}
    figure, (by_day, by_caller) = plt.subplots(
        1, 2, figsize=(11, 4.2), dpi=110, gridspec_kw={"width_ratios": [max(len(days), 2), max(len(callers), 2)]}
    )
    for axes, groups, title, joined in ((by_day, days, "per day (UTC)", True), (by_caller, callers, "per caller", False)):
        names = list(groups)
        at = list(range(len(names)))
        width = 0.38
        axes.bar([i - width / 2 for i in at], [groups[n]["baseline_usd"] for n in names], width,
                 label="all-strong baseline $", color="#c9ccd3")
        axes.bar([i + width / 2 for i in at], [groups[n]["routed_spend_usd"] for n in names], width,
                 label="routed spend $", color="#2f5bd3")
        axes.set_xticks(at, names, rotation=30 if len(names) > 5 else 0, ha="right" if len(names) > 5 else "center")
        axes.set_xlim(*((-0.75, len(names) - 0.25) if len(names) > 1 else (-1, 1)))  # one bar pair: centred
        axes.set_title(title, fontsize=10)
        axes.set_ylabel("dollars (routed completions)")
        share_axes = axes.twinx()
        share_axes.plot(at, [100 * groups[n]["strong"] / groups[n]["routed"] if groups[n]["routed"] else float("nan")
                             for n in names], color="#b4361c", marker="o", linestyle="-" if joined else "",
                        label="strong share %")
        share_axes.set_ylim(0, 100)
        share_axes.set_ylabel("strong share %")
        handles, labels = axes.get_legend_handles_labels()
        more_handles, more_labels = share_axes.get_legend_handles_labels()
        axes.legend(handles + more_handles, labels + more_labels, loc="upper left", fontsize=8)
    baseline = sum(d["baseline_usd"] for d in days.values())
    saved = baseline - sum(d["routed_spend_usd"] for d in days.values())
    whole = f"{saved / baseline:.0%} of all-strong" if baseline else "no baseline"
    figure.suptitle(f"Routing savings: ${saved:.4f} saved ({whole}); all-strong: {report['baseline_model']}")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def write_report(report: dict[str, Any], out: Path, plot: bool = True) -> list[Path]:
    """savings.md (and savings.png) in ``out``; the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    markdown = out / "savings.md"
    markdown.write_text(savings_markdown(report))
    written = [markdown]
    if plot:
        plot_savings(report, out / "savings.png")
        written.append(out / "savings.png")
    return written
