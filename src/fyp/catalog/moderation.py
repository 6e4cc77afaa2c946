"""Moderation decisions: an append-only history of actions per video, from which each
video's current state and labels follow (the last action that set each wins).

Kept apart from the catalog store, so an app re-sending its videos never undoes a
moderator's decision. Durable (fsynced) before ``POST /v1/moderation`` answers."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from fyp.storage.sqlite import connect, transaction
from fyp.storage.sqlite_changes import change_cursor, stamp_changes
from fyp.types import ModerationAction


class ModerationStore(Protocol):
    def add(self, actions: Sequence[ModerationAction]) -> None:
        """Append actions; durable when it returns."""
        ...

    def history(self, video_id: str | None = None) -> list[ModerationAction]:
        """Every action (of one video, if given), oldest first."""
        ...

    def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS moderation_actions (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    video_id TEXT NOT NULL,
    state    TEXT,
    labels   TEXT,
    reason   TEXT NOT NULL,
    actor    TEXT NOT NULL,
    ts       INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS moderation_video ON moderation_actions (video_id);
"""
_COLUMNS = "video_id, state, labels, reason, actor, ts"


class SqliteModerationStore:
    def __init__(self, path: Path) -> None:
        self._conn = connect(path, "fsync")
        self._conn.executescript(_SCHEMA)
        stamp_changes(self._conn, ("moderation_actions",))
        self._lock = threading.Lock()

    def add(self, actions: Sequence[ModerationAction]) -> None:
        if not actions:
            return
        rows = [
            (
                a.video_id,
                a.state,
                None if a.labels is None else json.dumps(list(a.labels)),
                a.reason,
                a.actor,
                a.ts,
            )
            for a in actions
        ]
        with self._lock, transaction(self._conn) as cur:
            cur.executemany(
                f"INSERT INTO moderation_actions ({_COLUMNS}) VALUES (?,?,?,?,?,?)", rows
            )

    def history(self, video_id: str | None = None) -> list[ModerationAction]:
        sql = f"SELECT {_COLUMNS} FROM moderation_actions"
        args: tuple[str, ...] = ()
        if video_id is not None:
            sql += " WHERE video_id = ?"
            args = (video_id,)
        with self._lock:
            rows = self._conn.execute(sql + " ORDER BY id", args).fetchall()
        return [
            ModerationAction(
                str(v),
                None if s is None else str(s),
                None if lb is None else tuple(json.loads(str(lb))),
                str(r),
                str(a),
                int(t),
            )
            for v, s, lb, r, a, t in rows
        ]

    def change_cursor(self) -> int:
        with self._lock, transaction(self._conn, immediate=False) as cur:
            return change_cursor(cur)

    def videos_moderated_since(self, cursor: int) -> tuple[set[str], int]:
        with self._lock, transaction(self._conn, immediate=False) as cur:
            after = change_cursor(cur)
            rows = cur.execute(
                "SELECT DISTINCT video_id FROM moderation_actions WHERE changed_seq > ?",
                (cursor,),
            ).fetchall()
        return {str(r[0]) for r in rows}, after

    def close(self) -> None:
        with self._lock:
            self._conn.close()
