"""``fyp learn`` and ``fyp train`` where a learner process trains the models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from fyp.cli import app
from fyp.learning.link import channel_of, learner_lock


def test_fyp_learn_refuses_without_the_learned_models(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["learn", "--data-dir", str(tmp_path / "d")])
    assert result.exit_code == 2
    assert "the learned models are off" in result.output


def test_fyp_train_writes_the_learners_checkpoint_and_snapshot(
    learning: Any, tmp_path: Path
) -> None:
    server = learning.server()
    learning.catalog(server)
    learning.ingest(server, 0, 1_000)
    server.close()
    learning.engines.remove(server)
    config = tmp_path / "fyp.toml"
    config.write_text(
        "[model]\nenabled = true\nmin_count = 1\n[privacy]\nrequire_registered_users = false\n"
    )
    result = CliRunner().invoke(
        app, ["train", "--data-dir", str(learning.data), "--config", str(config)]
    )
    assert result.exit_code == 0, result.output
    assert (learning.data / "learner-checkpoint.pkl").is_file()
    assert (learning.data / "checkpoint.pkl").is_file()  # the server's, without the models
    (update,) = channel_of(learning.settings).read_after(0)
    assert update.full and update.offset == server.event_log.last_offset()
    # A learner running on the data dir: refused, nothing written.
    with learner_lock(learning.data, wait=True):
        refused = CliRunner().invoke(
            app, ["train", "--data-dir", str(learning.data), "--config", str(config)]
        )
    assert refused.exit_code == 2 and "a learner runs" in refused.output
