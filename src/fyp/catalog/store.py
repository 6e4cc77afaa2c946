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


class _Shared:
    """The values rows share, read once: strings by themselves, lists by their JSON."""

    def __init__(self) -> None:
        self.strings: dict[str, str] = {}
        self.lists: dict[str, tuple[str, ...]] = {}
        self.attributes: dict[str, tuple[tuple[str, str], ...]] = {}

    def string(self, s: str) -> str:
        return self.strings.setdefault(s, s)

    def tuple_of(self, text: str) -> tuple[str, ...]:
        found = self.lists.get(text)
        if found is None:
            found = self.lists[text] = tuple(map(self.string, json.loads(text)))
        return found

    def attribute_pairs(self, text: str) -> tuple[tuple[str, str], ...]:
        found = self.attributes.get(text)
        if found is None:
            pairs = json.loads(text).items()  # (stored sorted by name)
            found = self.attributes[text] = tuple(
                (self.string(k), self.string(v)) for k, v in pairs
            )
        return found


def _from_row(r: Any, shared: _Shared | None = None) -> Video:  # a sqlite3 row
    """The video of a row. Rows read together pass one ``shared``: the values videos
    share (creator, sound, hashtags, language, regions, labels, attributes) are then one
    object each across them, as the catalog index keeps them, not a copy per row."""
    one = _Shared() if shared is None else shared
    return Video(
        video_id=str(r[0]),
        creator_id=one.string(str(r[1])),
        duration_ms=int(r[2]),
        sound_id=None if r[3] is None else one.string(str(r[3])),
        hashtags=one.tuple_of(str(r[4])),
        caption=str(r[5]),
        language=None if r[6] is None else one.string(str(r[6])),
        regions=one.tuple_of(str(r[7])),
        created_at=None if r[8] is None else int(r[8]),
        labels=one.tuple_of(str(r[9])),
        attributes=one.attribute_pairs(str(r[10])),
    )


def _videos_of(rows: list[Any]) -> Iterator[Video]:
    """The videos of ``rows`` (sqlite3 rows, last first), first first. Each row is let go
    once read: its strings that videos share go at once, and what the next video is
    built of takes their place (a whole catalog read keeps no row to the end)."""
    shared = _Shared()
    while rows:
        yield _from_row(rows.pop(), shared)


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
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM videos ORDER BY rowid DESC"
            ).fetchall()
        return _videos_of(rows)

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
        shared = _Shared()
        return [_from_row(r, shared) for r in rows], after

    def close(self) -> None:
        with self._lock:
            self._conn.close()
