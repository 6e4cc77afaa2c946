"""The catalog and the moderation history in PostgreSQL: the
:class:`~fyp.catalog.store.CatalogStore` and
:class:`~fyp.catalog.moderation.ModerationStore` contracts, each write committed (and
flushed to the server's WAL) before it returns."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from psycopg.types.json import Jsonb

from fyp.storage.postgres.database import ChangesRead, Database
from fyp.types import ModerationAction, Video

_VIDEO_COLUMNS = (
    "video_id, creator_id, duration_ms, sound_id, hashtags, caption, language, regions, "
    "created_at, labels, attributes"
)
_UPSERT = (
    f"INSERT INTO videos ({_VIDEO_COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) "
    "ON CONFLICT (video_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _VIDEO_COLUMNS.replace(" ", "").split(",")[1:])
)  # (an update keeps the row's seq: a restart loads the catalog in its first order)


def _video_row(v: Video) -> tuple[object, ...]:
    return (
        v.video_id,
        v.creator_id,
        v.duration_ms,
        v.sound_id,
        Jsonb(list(v.hashtags)),
        v.caption,
        v.language,
        Jsonb(list(v.regions)),
        v.created_at,
        Jsonb(list(v.labels)),
        Jsonb(dict(v.attributes)),
    )


def _video(r: tuple[Any, ...]) -> Video:
    return Video(
        video_id=r[0],
        creator_id=r[1],
        duration_ms=int(r[2]),
        sound_id=r[3],
        hashtags=tuple(r[4]),
        caption=r[5],
        language=r[6],
        regions=tuple(r[7]),
        created_at=None if r[8] is None else int(r[8]),
        labels=tuple(r[9]),
        attributes=tuple(sorted(r[10].items())),  # (jsonb keeps its own key order)
    )


class PgCatalogStore(ChangesRead):
    def __init__(self, db: Database) -> None:
        self._db = db.attach()

    def upsert(self, videos: Sequence[Video]) -> None:
        if not videos:
            return
        # One statement a video (not one multi-row statement, where a video twice in a
        # batch would be an error): the last version of a video in the batch wins.
        with self._db.transaction() as cur:
            cur.executemany(_UPSERT, [_video_row(v) for v in videos])

    def get(self, video_id: str) -> Video | None:
        with self._db.transaction() as cur:
            cur.execute(f"SELECT {_VIDEO_COLUMNS} FROM videos WHERE video_id = %s", (video_id,))
            row = cur.fetchone()
        return None if row is None else _video(row)

    def all(self) -> Iterator[Video]:
        with self._db.transaction() as cur:
            rows = cur.execute(f"SELECT {_VIDEO_COLUMNS} FROM videos ORDER BY seq").fetchall()
        return (_video(r) for r in rows)

    def count(self) -> int:
        with self._db.transaction() as cur:
            row = cur.execute("SELECT COUNT(*) FROM videos").fetchone()
        return 0 if row is None else int(row[0])

    def videos_since(self, cursor: int) -> tuple[list[Video], int]:
        with self._db.transaction() as cur:
            after = self._db.change_cursor(cur)  # (first: see Database.change_cursor)
            rows = cur.execute(
                f"SELECT {_VIDEO_COLUMNS} FROM videos WHERE changed_xid >= %s::text::xid8"
                " ORDER BY seq",
                (str(cursor),),
            ).fetchall()
        return [_video(r) for r in rows], after

    def close(self) -> None:
        self._db.release()


_ACTION_COLUMNS = "video_id, state, labels, reason, actor, ts"


class PgModerationStore(ChangesRead):
    def __init__(self, db: Database) -> None:
        self._db = db.attach()

    def add(self, actions: Sequence[ModerationAction]) -> None:
        if not actions:
            return
        rows = [
            (
                a.video_id,
                a.state,
                None if a.labels is None else Jsonb(list(a.labels)),
                a.reason,
                a.actor,
                a.ts,
            )
            for a in actions
        ]
        with self._db.transaction() as cur:
            cur.executemany(
                f"INSERT INTO moderation_actions ({_ACTION_COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s)",
                rows,
            )

    def history(self, video_id: str | None = None) -> list[ModerationAction]:
        with self._db.transaction() as cur:
            if video_id is None:
                cur.execute(f"SELECT {_ACTION_COLUMNS} FROM moderation_actions ORDER BY id")
            else:
                cur.execute(
                    f"SELECT {_ACTION_COLUMNS} FROM moderation_actions"
                    " WHERE video_id = %s ORDER BY id",
                    (video_id,),
                )
            rows = cur.fetchall()
        return [
            ModerationAction(v, s, None if lb is None else tuple(lb), r, a, int(t))
            for v, s, lb, r, a, t in rows
        ]

    def videos_moderated_since(self, cursor: int) -> tuple[set[str], int]:
        with self._db.transaction() as cur:
            after = self._db.change_cursor(cur)
            rows = cur.execute(
                "SELECT DISTINCT video_id FROM moderation_actions"
                " WHERE changed_xid >= %s::text::xid8",
                (str(cursor),),
            ).fetchall()
        return {str(r[0]) for r in rows}, after

    def close(self) -> None:
        self._db.release()
