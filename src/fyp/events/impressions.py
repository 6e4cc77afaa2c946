"""The impression log: what was served, where, from which source, with which score.

Outcomes are joined to impressions by ``request_id`` and ``video_id``; "why this video"
is answered from what was recorded here when it was served.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import chain
from pathlib import Path
from typing import Any, Protocol

import orjson

from fyp.storage.sqlite import connect, delete_where, scrub, transaction
from fyp.types import DAY_MS, FilterCount, Impression

log = logging.getLogger(__name__)
Row = tuple[str, str, str, int, str, float, str, int, str, str]
# (day, surface, filter, rule) -> candidates removed
FilterKey = tuple[int, str, str, str]


class ImpressionLog(Protocol):
    def record(self, impressions: Sequence[Impression]) -> list[bool]:
        """Store impressions; an impression is identified by (request_id, position), so
        recording one again changes nothing. Returns, per impression, whether it was new."""
        ...

    def append(
        self,
        impressions: Sequence[Impression],
        removed: Mapping[tuple[str, str], int] | None = None,
        surface: str = "",
        ts: int = 0,
    ) -> None:
        """Store the impressions of a response just served (a new ``request_id``) without
        making the response wait for the write: they may be stored a moment later, but
        every read of this log, and :meth:`close`, sees them. ``removed``: what each
        (filter, rule) removed from that response's candidates on ``surface`` at ``ts``
        (Unix ms), added to the day's :class:`FilterCount` (the audit report's "what
        each rule filtered")."""
        ...

    def between(self, since_ms: int, until_ms: int) -> Iterator[Impression]:
        """Every impression served in [since_ms, until_ms), in the order served."""
        ...

    def filter_counts(self, since_ms: int, until_ms: int) -> list[FilterCount]:
        """Filter counts of the days that start in [since_ms, until_ms), by day."""
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

    def withdraw(self, user_id: str, request_id: str, from_position: int) -> list[str] | None:
        """Delete the impressions of ``user_id``'s response ``request_id`` at positions
        ``from_position`` and after (cards a client never showed: it asked for a page in
        their place); returns their video ids in position order, or None if that
        response was not served to ``user_id``."""
        ...

    def erase_user(self, user_id: str) -> int:
        """Delete every impression of ``user_id``, leaving nothing of them in the files."""
        ...

    def scrub(self) -> None:
        """Leave nothing of deleted impressions anywhere in the files (after an erasure:
        see :func:`fyp.storage.sqlite.scrub`)."""
        ...

    def delete_before(self, ts: int) -> int:
        """Delete impressions served before ``ts`` (retention); returns how many."""
        ...

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
    reason     TEXT NOT NULL DEFAULT '',
    signals    TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS impressions_user_video ON impressions (user_id, video_id);
CREATE UNIQUE INDEX IF NOT EXISTS impressions_request ON impressions (request_id, position);
CREATE TABLE IF NOT EXISTS filter_counts (
    day     INTEGER NOT NULL,
    surface TEXT NOT NULL,
    filter  TEXT NOT NULL,
    rule    TEXT NOT NULL,
    n       INTEGER NOT NULL,
    PRIMARY KEY (day, surface, filter, rule)
);
"""
_ADD_FILTER_COUNT = (
    "INSERT INTO filter_counts (day, surface, filter, rule, n) VALUES (?,?,?,?,?) "
    "ON CONFLICT (day, surface, filter, rule) DO UPDATE SET n = n + excluded.n"
)

_VALUES = "VALUES (?,?,?,?,?,?,?,?,?,?)"
_COLUMNS = "request_id, user_id, video_id, position, source, score, surface, ts, reason, signals"


def _migrate(conn: sqlite3.Connection) -> None:
    """Files written before impressions kept their signals get the column (empty)."""
    columns = {str(r[1]) for r in conn.execute("PRAGMA table_info(impressions)")}
    if "signals" not in columns:
        conn.execute("ALTER TABLE impressions ADD COLUMN signals TEXT NOT NULL DEFAULT '[]'")


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
        tuple((str(name), float(w)) for name, w in json.loads(str(r[9]))),
    )


MAX_BACKOFF_S = 5.0  # the writer's longest wait between retries of a failing disk
_ROWS_PER_INSERT = 90  # 900 parameters a statement: well under SQLite's limit


@functools.lru_cache(maxsize=_ROWS_PER_INSERT)
def _insert_sql(rows: int) -> str:
    return f"INSERT INTO impressions ({_COLUMNS}) VALUES " + ",".join(
        ["(?,?,?,?,?,?,?,?,?,?)"] * rows
    )


def to_row(i: Impression) -> Row:
    return (
        i.request_id,
        i.user_id,
        i.video_id,
        i.position,
        i.source,
        i.score,
        i.surface,
        i.ts,
        i.reason,
        orjson.dumps(i.signals).decode() if i.signals else "[]",
    )


class WriteBehind:
    """What :meth:`ImpressionLog.append` gathers (rows and filter counts), written off the
    request path by a thread of its own: every ``every_s`` it calls ``write(rows,
    counts)`` holding ``lock`` (the store's connection) with what gathered. Every read
    of the store, and its close, calls :meth:`flush` (holding ``lock``) first, so reads
    see every append. What ``write`` fails to write stays pending, in order, and is
    tried again, with backoff while it keeps failing."""

    def __init__(
        self,
        write: Callable[[list[Row], Counter[FilterKey]], None],
        lock: threading.Lock,
        every_s: float,
    ) -> None:
        self._write = write
        self._lock = lock
        self._every_s = every_s
        self._pending: list[Row] = []
        self._pending_counts: Counter[FilterKey] = Counter()
        # Guards _pending and _closing (appends never wait for the connection); the
        # writer waits on it for a first pending row.
        self._wake = threading.Condition(threading.Lock())
        self._closing = False
        self._writer = threading.Thread(target=self._run, daemon=True, name="impressions")
        self._writer.start()

    def add(
        self,
        impressions: Sequence[Impression],
        removed: Mapping[tuple[str, str], int] | None,
        surface: str,
        ts: int,
    ) -> None:
        """What :meth:`ImpressionLog.append` is given, to be written behind."""
        if not impressions and not removed:
            return
        # Rows are made here, not by the writer: Python work in that thread would hold
        # the GIL against the requests (up to a switch interval, 5 ms, at a time), while
        # its database writes release it.
        rows = [to_row(i) for i in impressions]
        with self._wake:
            if self._closing:
                raise RuntimeError("the impression log is closed")
            if not self._pending and not self._pending_counts:
                self._wake.notify()
            self._pending += rows
            if removed:
                day = ts // DAY_MS * DAY_MS
                for (name, rule), n in removed.items():
                    self._pending_counts[(day, surface, name, rule)] += n

    def _run(self) -> None:
        failures = 0
        while True:
            with self._wake:
                while not self._pending and not self._pending_counts and not self._closing:
                    self._wake.wait()
                if not self._closing:
                    self._wake.wait(self._every_s)  # let a batch gather
                if self._closing:
                    return  # close() writes what is left
            try:
                with self._lock:
                    self.flush()
                failures = 0
            except Exception as err:  # kept pending: the next flush (or a read) tries again
                # A full or failing disk (or a server down) lasts: back off (up to
                # MAX_BACKOFF_S) and say so once per run of failures, not ten times a second.
                if failures == 0:
                    log.warning("writing impressions failed (%s); retrying with backoff", err)
                failures += 1
                with self._wake:  # woken early by stop()
                    if not self._closing:
                        self._wake.wait(min(self._every_s * 2**failures, MAX_BACKOFF_S))

    def flush(self) -> None:
        """Write the pending rows, in append order (hold ``lock``)."""
        with self._wake:
            pending, self._pending = self._pending, []
            counts, self._pending_counts = self._pending_counts, Counter()
        if not pending and not counts:
            return
        try:
            self._write(pending, counts)
        except BaseException:
            with self._wake:
                self._pending = pending + self._pending
                self._pending_counts.update(counts)
            raise

    def stop(self) -> None:
        """Refuse further appends and end the writer thread; the caller flushes what is
        left (holding ``lock``)."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        if self._writer is not threading.current_thread():
            self._writer.join()


class SqliteImpressionLog:
    """Impressions in SQLite. :meth:`record` commits before it returns, and commits reach
    the OS (they survive a killed process); they are not fsynced one by one, since
    serving must stay fast.

    :meth:`append` (what serving uses) is written behind, off the request path
    (:class:`WriteBehind`): its thread commits what gathered in the last
    ``write_behind_s`` in one transaction, with multi-row statements (SQLite releases
    the GIL while it writes, and the WAL's checkpoints and their syncs happen there too,
    not in a request). Every read, and :meth:`close`, writes what is pending first; a
    killed process can lose the last moment of impressions."""

    def __init__(self, path: Path, write_behind_s: float = 0.05) -> None:
        self._conn = connect(path, "os")
        self._conn.executescript(_SCHEMA)
        _migrate(self._conn)
        self._lock = threading.Lock()  # the connection: held while pending rows are written
        self._behind = WriteBehind(self._write, self._lock, write_behind_s)

    def record(self, impressions: Sequence[Impression]) -> list[bool]:
        if not impressions:
            return []
        rows = [to_row(i) for i in impressions]
        with self._lock:
            self._flush()
            return self._insert(rows)

    def append(
        self,
        impressions: Sequence[Impression],
        removed: Mapping[tuple[str, str], int] | None = None,
        surface: str = "",
        ts: int = 0,
    ) -> None:
        self._behind.add(impressions, removed, surface, ts)

    def _flush(self) -> None:
        self._behind.flush()

    def _write(self, pending: list[Row], counts: Counter[FilterKey]) -> None:
        if pending:
            self._insert(pending)
        if counts:
            with self._transaction() as cur:
                cur.executemany(_ADD_FILTER_COUNT, [(*k, n) for k, n in counts.items()])

    def _insert(self, rows: list[Row]) -> list[bool]:
        try:
            # The common case (a feed just served): every impression is new. A few
            # statements of many rows each: one GIL release per statement, not per row.
            with self._transaction() as cur:
                for start in range(0, len(rows), _ROWS_PER_INSERT):
                    chunk = rows[start : start + _ROWS_PER_INSERT]
                    cur.execute(_insert_sql(len(chunk)), list(chain.from_iterable(chunk)))
            return [True] * len(rows)
        except sqlite3.IntegrityError:
            pass  # some were recorded before (an import run again): one by one
        new: list[bool] = []
        with self._transaction() as cur:
            for row in rows:
                cur.execute(f"INSERT OR IGNORE INTO impressions ({_COLUMNS}) {_VALUES}", row)
                new.append(cur.rowcount == 1)
        return new

    def _transaction(self) -> contextlib.AbstractContextManager[sqlite3.Cursor]:
        return transaction(self._conn, immediate=False)

    def for_user(self, user_id: str, limit: int) -> list[Impression]:
        with self._lock:
            self._flush()
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM impressions WHERE user_id = ? ORDER BY id DESC LIMIT ?",
                (user_id, limit),
            ).fetchall()
        return [_from_row(r) for r in rows]

    def withdraw(self, user_id: str, request_id: str, from_position: int) -> list[str] | None:
        with self._lock:
            self._flush()
            with self._transaction() as cur:
                rows = cur.execute(
                    "SELECT position, video_id FROM impressions "
                    "WHERE request_id = ? AND user_id = ? ORDER BY position",
                    (request_id, user_id),
                ).fetchall()
                if not rows:
                    return None
                cur.execute(
                    "DELETE FROM impressions "
                    "WHERE request_id = ? AND user_id = ? AND position >= ?",
                    (request_id, user_id, from_position),
                )
        return [str(v) for p, v in rows if p >= from_position]

    def find(self, user_id: str, video_id: str) -> Impression | None:
        with self._lock:
            self._flush()
            row = self._conn.execute(
                f"SELECT {_COLUMNS} FROM impressions WHERE user_id = ? AND video_id = ? "
                "ORDER BY id DESC LIMIT 1",
                (user_id, video_id),
            ).fetchone()
        return None if row is None else _from_row(row)

    def between(self, since_ms: int, until_ms: int) -> Iterator[Impression]:
        with self._lock:
            self._flush()
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM impressions WHERE ts >= ? AND ts < ? ORDER BY id",
                (since_ms, until_ms),
            ).fetchall()
        return (_from_row(r) for r in rows)

    def filter_counts(self, since_ms: int, until_ms: int) -> list[FilterCount]:
        with self._lock:
            self._flush()
            rows = self._conn.execute(
                "SELECT day, surface, filter, rule, n FROM filter_counts "
                "WHERE day >= ? AND day < ? ORDER BY day, surface, filter, rule",
                (since_ms, until_ms),
            ).fetchall()
        return [FilterCount(int(d), str(s), str(f), str(r), int(n)) for d, s, f, r, n in rows]

    def recent_by_user(self, per_user: int) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        with self._lock:
            self._flush()
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
            self._flush()
            rows = self._conn.execute(
                "SELECT video_id, COUNT(*) FROM impressions GROUP BY video_id"
            ).fetchall()
        return {str(v): int(n) for v, n in rows}

    def count(self) -> int:
        with self._lock:
            self._flush()
            return int(self._conn.execute("SELECT COUNT(*) FROM impressions").fetchone()[0])

    def _delete(self, where: str, arg: object) -> int:
        with self._lock:
            self._flush()
            return delete_where(self._conn, "impressions", where, arg)

    def erase_user(self, user_id: str) -> int:
        return self._delete("user_id = ?", user_id)

    def scrub(self) -> None:
        with self._lock:
            self._flush()
            scrub(self._conn)

    def delete_before(self, ts: int) -> int:
        return self._delete("ts < ?", ts)

    def close(self) -> None:
        self._behind.stop()
        with self._lock:
            try:
                self._flush()
            finally:  # a flush that fails (a full disk) must not leave the file open
                self._conn.close()
