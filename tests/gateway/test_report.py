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
