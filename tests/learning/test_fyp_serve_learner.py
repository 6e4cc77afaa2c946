"""``fyp serve`` with the learned models on, as deployed: it starts its learner as a child
process, which stops when the server is killed; a new server's learner takes over."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from fyp.learning.link import read_status
from server_process import Server


def _learned_models(server: Server, past: int = 0, timeout_s: float = 60.0) -> dict[str, Any]:
    """``/healthz``'s learned models once the learner is up and the server serves a
    version past ``past``."""
    deadline = time.monotonic() + timeout_s
    with server.client() as client:
        while time.monotonic() < deadline:
            models: dict[str, Any] = client.get("/healthz").json()["learned_models"]
            if models["learner"] == "up" and models["version"] > past:
                return models
            time.sleep(0.1)
    raise AssertionError(f"no learner, or no version past {past}: {server.output()}")


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] in ("Z", "X")
    except OSError:
        return True


@pytest.mark.slow  # (fyp serve and its learner: subprocesses)
def test_fyp_serve_runs_its_learner_which_stops_when_the_server_is_killed(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    config = tmp_path / "fyp.toml"
    config.write_text("[model]\nenabled = true\n")
    server = Server(data, tmp_path / "server.log", config=config)
    try:
        server.wait_ready()
        first = _learned_models(server)
        status = read_status(data)
        assert status is not None and status.pid != server.proc.pid
        server.kill9()
        deadline = time.monotonic() + 30
        while not _gone(status.pid):  # (it sees its server gone between two steps)
            assert time.monotonic() < deadline, "the learner outlived its server"
            time.sleep(0.05)
    finally:
        server.stop()
    again = Server(data, tmp_path / "server-2.log", config=config)
    try:
        again.wait_ready()
        _learned_models(again, past=first["version"])  # its learner's first snapshot
        assert read_status(data).pid not in (status.pid, os.getpid())  # type: ignore[union-attr]
    finally:
        again.stop()
