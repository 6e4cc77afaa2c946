"""``fyp serve`` before it starts a server: what it checks, and how it says what is wrong."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from fyp.cli import app


def test_serve_says_in_a_line_that_the_event_logs_server_does_not_answer(tmp_path: Path) -> None:
    # (port 1: nothing listens there; the connection is refused at once)
    result = CliRunner().invoke(
        app,
        ["serve", "--data-dir", str(tmp_path / "d"), "--event-log", "redis://127.0.0.1:1/0"],
    )
    assert result.exit_code == 2, result.output
    assert "error: the event log's Redis server" in result.output
    assert "Traceback" not in result.output


def test_serve_refuses_a_bad_store_url_in_a_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["serve", "--data-dir", str(tmp_path / "d"), "--store", "mysql://127.0.0.1/x"]
    )
    assert result.exit_code == 2, result.output
    assert "error: store: " in result.output and "'mysql' is none of" in result.output
