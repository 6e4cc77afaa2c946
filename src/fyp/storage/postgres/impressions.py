"""The impression log in PostgreSQL: the :class:`~fyp.events.impressions.ImpressionLog`
contract, with serving's appends written behind as in SQLite
(:class:`~fyp.events.impressions.WriteBehind`).

As the embedded log's writes reach the OS but are not fsynced one by one, these commit
with ``synchronous_commit = off``: a commit is in the server (it survives a killed API
process) before it returns, but the server flushes its WAL a moment later, so a crash
of the server itself can lose the last fraction of a second of impressions (never part
of a transaction). Everything else in these stores is flushed before it returns."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import psycopg

from fyp.events.impressions import FilterKey, Row, WriteBehind, to_row
from fyp.storage.postgres.database import Database
from fyp.types import FilterCount, Impression

_COLUMNS = "request_id, user_id, video_id, position, source, score, surface, ts, reason, signals"
_INSERT = (
    f"INSERT INTO impressions ({_COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s::jsonb)"
    " ON CONFLICT (request_id, position) DO NOTHING"
)
_ADD_FILTER_COUNT = (
    "INSERT INTO filter_counts AS f (day, surface, filter, rule, n) VALUES (%s,%s,%s,%s,%s)"
    " ON CONFLICT (day, surface, filter, rule) DO UPDATE SET n = f.n + excluded.n"
)


def _impression(r: tuple[Any, ...]) -> Impression:
    return Impression(
        r[0],
        r[1],
        r[2],
        int(r[3]),
        r[4],
        float(r[5]),
        r[6],
        int(r[7]),
        r[8],
        tuple((str(name), float(w)) for name, w in r[9]),
    )


class PgImpressionLog:
    def __init__(self, db: Database, write_behind_s: float = 0.05) -> None:
        self._db = db.attach()
        # Held while pending rows are written: a read flushes first and then sees them.
        self._lock = threading.Lock()
        self._behind = WriteBehind(self._write, self._lock, write_behind_s)

    @staticmethod
    def _relaxed(cur: psycopg.Cursor[Any]) -> None:
        cur.execute("SET LOCAL synchronous_commit = off")

    def record(self, impressions: Sequence[Impression]) -> list[bool]:
        if not impressions:
            return []
        rows = [to_row(i) for i in impressions]
        with self._lock:
            self._behind.flush()
            with self._db.transaction() as cur:
                self._relaxed(cur)
                cur.executemany(_INSERT + " RETURNING 1", rows, returning=True)
                new: list[bool] = []
                while True:  # one result a row: empty where it was recorded before
                    new.append(cur.fetchone() is not None)
                    if not cur.nextset():
                        break
        return new

    def append(
        self,
        impressions: Sequence[Impression],
        removed: Mapping[tuple[str, str], int] | None = None,
        surface: str = "",
        ts: int = 0,
    ) -> None:
        self._behind.add(impressions, removed, surface, ts)

    def _write(self, pending: list[Row], counts: Counter[FilterKey]) -> None:
        # (ON CONFLICT DO NOTHING: a write cut off by a fault after the server committed
        # it is sent again as it was, and must not fail for ever.)
        with self._db.transaction() as cur:
            self._relaxed(cur)
            if pending:
                cur.executemany(_INSERT, pending)
            if counts:  # (in key order: processes adding to the same rows cannot deadlock)
                cur.executemany(_ADD_FILTER_COUNT, [(*k, n) for k, n in sorted(counts.items())])

    def _read(self, query: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            self._behind.flush()
            with self._db.transaction() as cur:
                return cur.execute(query.encode(), args).fetchall()

    def for_user(self, user_id: str, limit: int) -> list[Impression]:
        rows = self._read(
            f"SELECT {_COLUMNS} FROM impressions WHERE user_id = %s ORDER BY id DESC LIMIT %s",
            (user_id, limit),
        )
        return [_impression(r) for r in rows]

    def withdraw(self, user_id: str, request_id: str, from_position: int) -> list[str] | None:
        with self._lock:
            self._behind.flush()
            with self._db.transaction() as cur:
                rows = cur.execute(
                    "SELECT position, video_id FROM impressions"
                    " WHERE request_id = %s AND user_id = %s ORDER BY position",
                    (request_id, user_id),
                ).fetchall()
                if not rows:
                    return None
                cur.execute(
                    "DELETE FROM impressions"
                    " WHERE request_id = %s AND user_id = %s AND position >= %s",
                    (request_id, user_id, from_position),
                )
        return [str(v) for p, v in rows if p >= from_position]

    def find(self, user_id: str, video_id: str) -> Impression | None:
        rows = self._read(
            f"SELECT {_COLUMNS} FROM impressions WHERE user_id = %s AND video_id = %s"
            " ORDER BY id DESC LIMIT 1",
            (user_id, video_id),
        )
        return _impression(rows[0]) if rows else None

    def between(self, since_ms: int, until_ms: int) -> Iterator[Impression]:
        rows = self._read(
            f"SELECT {_COLUMNS} FROM impressions WHERE ts >= %s AND ts < %s ORDER BY id",
            (since_ms, until_ms),
        )
        return (_impression(r) for r in rows)

    def filter_counts(self, since_ms: int, until_ms: int) -> list[FilterCount]:
        rows = self._read(
            "SELECT day, surface, filter, rule, n FROM filter_counts"
            " WHERE day >= %s AND day < %s ORDER BY day, surface, filter, rule",
            (since_ms, until_ms),
        )
        return [FilterCount(int(d), s, f, r, int(n)) for d, s, f, r, n in rows]

    def recent_by_user(self, per_user: int) -> dict[str, list[str]]:
        rows = self._read(
            "SELECT user_id, video_id FROM ("
            " SELECT user_id, video_id, id,"
            "  ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY id DESC) AS n"
            " FROM impressions) AS recent WHERE n <= %s ORDER BY id",
            (per_user,),
        )
        out: dict[str, list[str]] = {}
        for user_id, video_id in rows:
            out.setdefault(user_id, []).append(video_id)
        return out

    def exposure_counts(self) -> dict[str, int]:
        rows = self._read("SELECT video_id, COUNT(*) FROM impressions GROUP BY video_id")
        return {str(v): int(n) for v, n in rows}

    def count(self) -> int:
        return int(self._read("SELECT COUNT(*) FROM impressions")[0][0])

    def _delete(self, where: str, arg: object) -> int:
        with self._lock:
            self._behind.flush()
            with self._db.transaction() as cur:
                cur.execute(f"DELETE FROM impressions WHERE {where}".encode(), (arg,))
                return cur.rowcount

    def erase_user(self, user_id: str) -> int:
        return self._delete("user_id = %s", user_id)

    def scrub(self) -> None:
        """Rewrite the table from the rows that remain (``VACUUM FULL``): a deleted row's
        tuple stays in its page until then. It holds the table's lock for the rewrite."""
        with self._lock:
            self._behind.flush()
            with self._db.autocommit() as conn:
                conn.execute("VACUUM FULL impressions")

    def delete_before(self, ts: int) -> int:
        return self._delete("ts < %s", ts)

    def close(self) -> None:
        self._behind.stop()
        with self._lock:
            try:
                self._behind.flush()
            finally:  # a flush that fails (the server down) still lets the pool go
                self._db.release()
