"""`gateway-service report`'s edges: no prices, a file that is not GET /v1/spend's JSON, an unreachable gateway.
Its figures against a live stack's counters: tests/deploy/test_dashboards.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway_service.__main__ import main
from gateway_service.accounting.spend import summarise
from tests.conftest import closed_port


def test_without_prices_the_report_says_what_to_configure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spend = tmp_path / "spend.json"
    spend.write_text(json.dumps(summarise({}, "process", None)))
    assert main(["report", "--from", str(spend), "--out", str(tmp_path / "out"), "--no-plot"]) == 0
    written = (tmp_path / "out" / "savings.md").read_text()
    assert "no model routing may choose has [[prices]]" in written and written in capsys.readouterr().out
    assert not (tmp_path / "out" / "savings.png").exists()


@pytest.mark.parametrize("content", ["not json", '{"callers": {}}', "[]"])
def test_a_file_that_is_not_a_spend_answer_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str) -> None:
    spend = tmp_path / "spend.json"
    spend.write_text(content)
    assert main(["report", "--from", str(spend), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert str(spend) in error and "GET /v1/spend" in error
    assert not (tmp_path / "out").exists()


def test_an_unreachable_gateway_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    assert main(["report", "--url", url, "--out", str(tmp_path / "out")]) == 2
    assert f"could not reach the gateway at {url}/v1/spend" in capsys.readouterr().err


ROW = {"requests": 4, "routed": 4, "strong": 1, "spend_usd": 0.5, "routed_spend_usd": 0.5, "baseline_usd": 1.0,
       "saved_usd": 0.5}


def _report(**changes: object) -> dict:
    base = {"scope": "process", "baseline_model": "m", "callers": {"team": dict(ROW)},
            "days": [{"day": "2026-12-07", "caller": "team", **ROW}]}
    return {**base, **changes}


@pytest.mark.parametrize(("report", "field"), [
    (_report(callers={"team": {**ROW, "requests": "many"}}), "callers.team.requests"),
    (_report(callers={"team": {k: v for k, v in ROW.items() if k != "strong"}}), "callers.team.strong"),
    (_report(callers=[1, 2]), "callers"),
    (_report(days=[{"day": "yesterday", "caller": "team", **ROW}]), "days.0.day"),
    (_report(days={"2026-12-07": ROW}), "days"),
    (_report(scope="galaxy"), "scope"),
    (_report(callers={"team": {**ROW, "spend_usd": -1}}), "callers.team.spend_usd"),
    (_report(days=[{"day": "2026-12-07", "caller": "team", **ROW, "baseline_usd": float("inf")}]), "days.0.baseline_usd"),
])
def test_a_malformed_spend_file_is_one_line_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], report: dict, field: str
) -> None:
    spend = tmp_path / "spend.json"
    spend.write_text(json.dumps(report))
    assert main(["report", "--from", str(spend), "--out", str(tmp_path / "out"), "--no-plot"]) == 2
    error = capsys.readouterr().err
    assert field in error and "Traceback" not in error and len(error.strip().splitlines()) == 1, error


def test_caller_names_cannot_inject_rows_and_requests_are_whole_numbers(tmp_path: Path) -> None:
    hostile = "evil | 999 | 999 |\n| forged"
    report = _report(callers={hostile: dict(ROW)}, days=[{"day": "2026-12-07", "caller": hostile, **ROW}] * 2)
    spend = tmp_path / "spend.json"
    spend.write_text(json.dumps(report))
    assert main(["report", "--from", str(spend), "--out", str(tmp_path / "out"), "--no-plot"]) == 0
    written = (tmp_path / "out" / "savings.md").read_text()
    rows = [line for line in written.splitlines() if line.startswith("| ")]
    assert not [row for row in rows if row.startswith("| forged")]
    assert all(row.count("|") - row.count("\\|") == 9 for row in rows), rows  # 8 cells each, whatever the name says
    assert "| 2026-12-07 | 8 | 8 |" in written  # the day's two rows summed: 8 requests, never 8.0
