"""Opening SQLite databases the way every embedded store wants them."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Literal

Durability = Literal["fsync", "os"]


def connect(path: Path, durability: Durability) -> sqlite3.Connection:
    """Open ``path`` in WAL mode.

    ``fsync``: every commit is fsynced before it returns (``synchronous=FULL``), so an
    acknowledged write survives a power loss. ``os``: a commit reaches the OS page cache
    (``synchronous=NORMAL``), which survives a killed process but not a power loss; used
    for data the engine can rebuild or afford to lose the last moments of.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: we open transactions ourselves, so each batch is one commit.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=" + ("FULL" if durability == "fsync" else "NORMAL"))
    conn.execute("PRAGMA busy_timeout=5000")
    conn.execute("PRAGMA foreign_keys=ON")
    # Deleted rows are overwritten with zeros, not left in free pages: an erased user's
    # data must not be recoverable from the file (see forget_wal).
    conn.execute("PRAGMA secure_delete=ON")
    return conn


def forget_wal(conn: sqlite3.Connection) -> None:
    """Copy the WAL into the database and truncate it: after a delete, the WAL still
    holds the old pages (the deleted rows) until this."""
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
