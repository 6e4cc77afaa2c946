"""Checkpoints of the in-memory state: written atomically, read back whole.

A checkpoint is the learning loop's state (and the learned models) as of one log offset,
pickled (protocol 5) under a small header. It is written to a temporary file in the same
directory, fsynced, renamed over the old one and the directory fsynced: a crash at any
moment leaves either the old checkpoint or the new one, never a torn file. It holds what
the engine's own process made from the event log, so it is read only by that engine
(pickle runs code on load: never point it at a file from elsewhere).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

FORMAT = 3  # 2: the first ranker reads the surface; 3: examples keep their inputs


def write_checkpoint(path: Path, payload: dict[str, Any]) -> int:
    """Atomically replace ``path`` with ``payload``; returns the bytes written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("wb") as f:
            pickle.dump({"format": FORMAT, **payload}, f, protocol=5)
            f.flush()
            os.fsync(f.fileno())
            size = f.tell()
        os.replace(tmp, path)
    except BaseException:
        # A partial file (a full disk) would keep the space, and what it holds.
        tmp.unlink(missing_ok=True)
        raise
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename itself
    finally:
        os.close(fd)
    return size


def read_checkpoint(path: Path) -> dict[str, Any] | None:
    """The checkpoint at ``path``, or None when there is none or it is of another
    format (the engine then replays the log from the start)."""
    if not path.is_file():
        return None
    with path.open("rb") as f:
        data = pickle.load(f)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return None
    return data
