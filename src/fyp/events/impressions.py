"""The impression log: what was served, where, from which source, with which score.

Outcomes are joined to impressions by ``request_id`` and ``video_id``; "why this video"
is answered from what was recorded here when it was served.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from fyp.storage.sqlite import connect
from fyp.types import Impression


class ImpressionLog(Protocol):
    def record(self, impressions: Sequence[Impression]) -> list[bool]:
        """Store impressions; an impression is identified by (request_id, position), so
        recording one again changes nothing. Returns, per impression, whether it was new."""
        ...

    def for_user(self, user_id: str, limit: int) -> list[Impression]:
        """The user's most recent impressions, newest first."""
        ...

    def find(self, user_id: str, video_id: str) -> Impression | None:
        """The most recent impression of ``video_id`` served to ``user_id``."""
        ...

    def recent_by_user(self, per_user: int) -> dict[str, list[str]]:
        """For each user, the video ids of their last ``per_user`` impressions, oldest first."""
        ...

    def exposure_counts(self) -> dict[str, int]:
        """How many times each video was served."""
        ...

    def count(self) -> int: ...

    def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS impressions (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    video_id   TEXT NOT NULL,
    position   INTEGER NOT NULL,
    source     TEXT NOT NULL,
    score      REAL NOT NULL,
    surface    TEXT NOT NULL,
    ts         INTEGER NOT NULL,
    reason     TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS impressions_user_video ON impressions (user_id, video_id);
CREATE UNIQUE INDEX IF NOT EXISTS impressions_request ON impressions (request_id, position);
"""

_VALUES = "VALUES (?,?,?,?,?,?,?,?,?)"
_COLUMNS = "request_id, user_id, video_id, position, source, score, surface, ts, reason"


def _from_row(r: Any) -> Impression:  # a sqlite3 row
    return Impression(
        str(r[0]),
        str(r[1]),
        str(r[2]),
        int(r[3]),
        str(r[4]),
        float(r[5]),
        str(r[6]),
        int(r[7]),
        str(r[8]),
    )


class SqliteImpressionLog:
    """Impressions in SQLite. Commits reach the OS before ``record`` returns (they survive
    a killed process); they are not fsynced one by one, since serving must stay fast."""

    def __init__(self, path: Path) -> None:
        self._conn = connect(path, "os")
        self._conn.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def record(self, impressions: Sequence[Impression]) -> list[bool]:
        if not impressions:
            return []
        rows = [
            (
                i.request_id,
                i.user_id,
                i.video_id,
                i.position,
                i.source,
                i.score,
                i.surface,
                i.ts,
                i.reason,
            )
            for i in impressions
        ]
        with self._lock:
            try:
                # The common case (a feed just served): every impression is new, one
                # statement for the batch.
                with self._transaction() as cur:
                    cur.executemany(f"INSERT INTO impressions ({_COLUMNS}) {_VALUES}", rows)
                return [True] * len(rows)
            except sqlite3.IntegrityError:
                pass  # some were recorded before (an import run again): one by one
            new: list[bool] = []
            with self._transaction() as cur:
                for row in rows:
                    cur.execute(f"INSERT OR IGNORE INTO impressions ({_COLUMNS}) {_VALUES}", row)
                    new.append(cur.rowcount == 1)
            return new

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        cur = self._conn.cursor()
        cur.execute("BEGIN")
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")

    def for_user(self, user_id: str, limit: int) -> list[Impression]:
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM impressions WHERE user_id = ? ORDER BY id DESC LIMIT ?",
                (user_id, limit),
            ).fetchall()
        return [_from_row(r) for r in rows]

    def find(self, user_id: str, video_id: str) -> Impression | None:
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_COLUMNS} FROM impressions WHERE user_id = ? AND video_id = ? "
                "ORDER BY id DESC LIMIT 1",
                (user_id, video_id),
            ).fetchone()
        return None if row is None else _from_row(row)

    def recent_by_user(self, per_user: int) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        with self._lock:
            rows = self._conn.execute(
                "SELECT user_id, video_id FROM ("
                " SELECT user_id, video_id, id,"
                "  ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY id DESC) AS n"
                " FROM impressions) WHERE n <= ? ORDER BY id",
                (per_user,),
            )
            for user_id, video_id in rows:
                out.setdefault(user_id, []).append(video_id)
        return out

    def exposure_counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT video_id, COUNT(*) FROM impressions GROUP BY video_id"
            ).fetchall()
        return {str(v): int(n) for v, n in rows}

    def count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM impressions").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()
