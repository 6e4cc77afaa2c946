"""Opening SQLite databases the way every embedded store wants them."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
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


class WalBusyError(sqlite3.OperationalError):
    """The WAL could not be truncated: another connection (a reader in another process,
    say ``fyp audit report``) holds it."""


def forget_wal(conn: sqlite3.Connection, attempts: int = 5) -> None:
    """Copy the WAL into the database and truncate it: after a delete, the WAL still
    holds the old pages (the deleted rows) until this. SQLite does not raise when a
    reader blocks it (the pragma answers busy=1): retried, then WalBusyError."""
    for attempt in range(attempts):
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if not busy:
            return
        time.sleep(0.05 * (attempt + 1))
    raise WalBusyError(
        "the write-ahead log could not be truncated (another process is reading the "
        "database); the deleted rows may remain in it until it is: retry"
    )


def delete_where(conn: sqlite3.Connection, table: str, where: str, arg: object) -> int:
    """``DELETE FROM table WHERE where`` (one ``?``), leaving nothing of the rows in the
    files (secure_delete, then the WAL truncated, even when nothing matched now: that
    finishes an earlier deletion whose truncation a reader blocked); returns how many."""
    cur = conn.execute(f"DELETE FROM {table} WHERE {where}", (arg,))
    forget_wal(conn)
    return cur.rowcount


def scrub(conn: sqlite3.Connection) -> None:
    """Rewrite the database whole (``VACUUM``), then truncate the WAL that carried the
    rewrite: after an erasure, the bytes of deleted rows can outlive ``secure_delete``.
    It overwrites a row where it is deleted, but a row's cell that SQLite moved between
    pages earlier (a rebalance after other rows came or went) leaves its old copy in the
    unallocated space of the page it left, which nothing overwrites; VACUUM builds every
    page anew from the rows that remain. It costs a pass over the file."""
    conn.execute("VACUUM")
    forget_wal(conn)


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection, immediate: bool = True) -> Iterator[sqlite3.Cursor]:
    """One transaction (``BEGIN IMMEDIATE``: the write lock at once), committed when the
    block ends, rolled back if it raises. The ROLLBACK only if SQLite has not rolled back
    already (a full disk fails the COMMIT and ends the transaction itself), so the error
    raised is the real one."""
    cur = conn.cursor()
    cur.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
    try:
        yield cur
        cur.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            cur.execute("ROLLBACK")
        raise
