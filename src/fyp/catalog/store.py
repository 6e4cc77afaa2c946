"""Where videos are kept. The in-memory :class:`~fyp.catalog.index.CatalogIndex` is
loaded from it at start and kept in step on every upsert."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from fyp.storage.sqlite import connect, transaction
from fyp.storage.sqlite_changes import change_cursor, stamp_changes
from fyp.types import Video


class CatalogStore(Protocol):
    def upsert(self, videos: Sequence[Video]) -> None:
        """Insert or replace videos by ``video_id``; durable when it returns."""
        ...

    def get(self, video_id: str) -> Video | None: ...

    def all(self) -> Iterator[Video]: ...

    def count(self) -> int: ...

    def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS videos (
    video_id    TEXT PRIMARY KEY,
    creator_id  TEXT NOT NULL,
    duration_ms INTEGER NOT NULL,
    sound_id    TEXT,
    hashtags    TEXT NOT NULL,
    caption     TEXT NOT NULL,
    language    TEXT,
    regions     TEXT NOT NULL,
    created_at  INTEGER,
    labels      TEXT NOT NULL,
    attributes  TEXT NOT NULL DEFAULT '{}'
);
"""

_COLUMNS = (
    "video_id, creator_id, duration_ms, sound_id, hashtags, caption, language, regions, "
    "created_at, labels, attributes"
)


_UPDATES = ", ".join(
    f"{c} = excluded.{c}" for c in _COLUMNS.replace(" ", "").split(",") if c != "video_id"
)


def _to_row(v: Video) -> tuple[object, ...]:
    return (
        v.video_id,
        v.creator_id,
        v.duration_ms,
        v.sound_id,
        json.dumps(v.hashtags),
        v.caption,
        v.language,
        json.dumps(v.regions),
        v.created_at,
        json.dumps(v.labels),
        json.dumps(dict(v.attributes), sort_keys=True),
    )


def _from_row(r: Any) -> Video:  # a sqlite3 row
    return Video(
        video_id=str(r[0]),
        creator_id=str(r[1]),
        duration_ms=int(r[2]),
        sound_id=None if r[3] is None else str(r[3]),
        hashtags=tuple(json.loads(str(r[4]))),
        caption=str(r[5]),
        language=None if r[6] is None else str(r[6]),
        regions=tuple(json.loads(str(r[7]))),
        created_at=None if r[8] is None else int(r[8]),
        labels=tuple(json.loads(str(r[9]))),
        attributes=tuple(json.loads(str(r[10])).items()),  # (stored sorted by name)
    )


def _migrate(conn: sqlite3.Connection) -> None:
    """A catalog.db made before videos kept attributes: its videos have none."""
    columns = {str(r[1]) for r in conn.execute("PRAGMA table_info(videos)")}
    if "attributes" not in columns:
        conn.execute("ALTER TABLE videos ADD COLUMN attributes TEXT NOT NULL DEFAULT '{}'")


class SqliteCatalogStore:
    def __init__(self, path: Path) -> None:
        self._conn = connect(path, "fsync")
        self._conn.executescript(_SCHEMA)
        _migrate(self._conn)
        stamp_changes(self._conn, ("videos",))
        self._lock = threading.Lock()

    def upsert(self, videos: Sequence[Video]) -> None:
        if not videos:
            return
        with self._lock, transaction(self._conn) as cur:
            # An update keeps the video's rowid (INSERT OR REPLACE would move it to the
            # end), so a restart loads the catalog in the order it was first built.
            cur.executemany(
                f"INSERT INTO videos ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?) "
                f"ON CONFLICT(video_id) DO UPDATE SET {_UPDATES}",
                [_to_row(v) for v in videos],
            )

    def get(self, video_id: str) -> Video | None:
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_COLUMNS} FROM videos WHERE video_id = ?", (video_id,)
            ).fetchone()
        return None if row is None else _from_row(row)

    def all(self) -> Iterator[Video]:
        with self._lock:
            rows = self._conn.execute(f"SELECT {_COLUMNS} FROM videos ORDER BY rowid").fetchall()
        return (_from_row(r) for r in rows)

    def count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM videos").fetchone()[0])

    def change_cursor(self) -> int:
        with self._lock, transaction(self._conn, immediate=False) as cur:
            return change_cursor(cur)

    def videos_since(self, cursor: int) -> tuple[list[Video], int]:
        with self._lock, transaction(self._conn, immediate=False) as cur:
            after = change_cursor(cur)
            rows = cur.execute(
                f"SELECT {_COLUMNS} FROM videos WHERE changed_seq > ? ORDER BY rowid", (cursor,)
            ).fetchall()
        return [_from_row(r) for r in rows], after

    def close(self) -> None:
        with self._lock:
            self._conn.close()
