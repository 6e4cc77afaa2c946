"""An erasure carried out for a learner that is not running (``erase_at_rest``): no file
of the learner's is left holding the user."""

from __future__ import annotations

import pickle
from pathlib import Path

from fyp.config import load_settings
from fyp.engine import LEARNER_CHECKPOINT_FILE
from fyp.learning.link import erase_at_rest
from fyp.storage import checkpoint as checkpoint_module


def test_a_learner_checkpoint_this_code_cannot_read_is_not_left_holding_the_user(
    tmp_path: Path,
) -> None:
    """One of another format (newer code's, or naming a class this code lacks) cannot be
    rewritten without the user here, and the learner would replay the log instead of
    reading it: it goes, rather than keep the erased user's state on disk."""
    settings = load_settings(overrides={"data_dir": tmp_path}, environ={})
    path = tmp_path / LEARNER_CHECKPOINT_FILE
    with path.open("wb") as f:
        pickle.dump({checkpoint_module._HEADER_KEY: checkpoint_module.FORMAT + 1}, f, protocol=2)
        pickle.dump({"state": {"users": {"the-erased-user": [1, 2, 3]}}}, f, protocol=5)
    erase_at_rest(settings, "the-erased-user")
    assert not path.exists()
