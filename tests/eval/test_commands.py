"""``fyp eval simulate`` from the command line (``fyp eval kuairand`` is tested with the
offline protocol, in test_offline.py)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from fyp.cli import app

SMALL = ["--users", "12", "--sessions", "2", "--videos", "600", "--bootstrap", "20"]


def test_simulate_writes_the_json_of_each_method(tmp_path: Path) -> None:
    out = tmp_path / "loop.json"
    result = CliRunner().invoke(
        app,
        ["eval", "simulate", "--methods", "random,oracle", *SMALL, "--json", str(out)],
    )
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())
    assert list(written["methods"]) == ["random", "oracle"]
    assert written["protocol"]["users"] == 12
    oracle, random = written["methods"]["oracle"], written["methods"]["random"]
    key = "watch_time_per_session_s"
    assert oracle[key]["mean"] > random[key]["mean"]
    assert "topic entropy, session 2" in result.output


def test_simulate_refuses_an_unknown_method() -> None:
    result = CliRunner().invoke(app, ["eval", "simulate", "--methods", "nope", *SMALL])
    assert result.exit_code == 2
    assert "unknown method" in result.output
