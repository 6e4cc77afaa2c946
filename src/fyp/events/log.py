"""The durable event log: append-only, idempotent by ``event_id``, replayable by offset."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from fyp.storage.sqlite import connect, delete_where, scrub, transaction
from fyp.types import Event, EventType, LoggedEvent


@dataclass(frozen=True, slots=True)
class AppendResult:
    """``accepted``: indices (into the appended sequence) written now; ``duplicates``:
    indices whose ``event_id`` was already in the log or earlier in the same batch;
    ``end``: the log's last offset as the append left it (at or after each of its
    events'; later appends move it on), None where the log did not say."""

    accepted: list[int]
    duplicates: list[int]
    end: int | None = None


class EventLog(Protocol):
    """An append-only log of events. ``append`` returns only after the events are durable."""

    def append(self, events: Sequence[Event]) -> AppendResult: ...

    def read(self, after_offset: int, limit: int) -> list[LoggedEvent]:
        """Events with offset > ``after_offset``, in offset order, at most ``limit``."""
        ...

    def last_offset(self) -> int: ...

    def follow(self) -> int:
        """The log's end as stored now, read again: what another process appended (a
        learner process follows the server's log). :meth:`last_offset` is then it."""
        ...

    def count(self) -> int: ...

    def contains(self, event_id: str) -> bool: ...

    def for_user(self, user_id: str) -> list[LoggedEvent]:
        """Every event of ``user_id`` still held, in offset order (an export)."""
        ...

    def erase_user(self, user_id: str) -> int:
        """Delete every event of ``user_id``, leaving nothing of them in the files;
        returns how many. Offsets are never reused."""
        ...

    def scrub(self) -> None:
        """Leave nothing of deleted events anywhere in the files (after an erasure: see
        :func:`fyp.storage.sqlite.scrub`)."""
        ...

    def delete_before(self, ts: int) -> int:
        """Delete events that happened before ``ts`` (retention); returns how many."""
        ...

    def commit(self, reader: str, offset: int) -> None:
        """``reader`` (a process folding the log from its checkpoint) holds every event
        through ``offset`` in a checkpoint: a log that trims keeps what it would replay
        (the Redis log: docs/cluster.md). The embedded log is trimmed only by retention,
        and ignores it."""
        ...

    def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    offset     INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id   TEXT NOT NULL UNIQUE,
    user_id    TEXT NOT NULL,
    video_id   TEXT NOT NULL,
    type       TEXT NOT NULL,
    ts         INTEGER NOT NULL,
    watch_ms   INTEGER,
    request_id TEXT,
    surface    TEXT
);
CREATE INDEX IF NOT EXISTS events_user ON events (user_id);
"""

_TYPES = {t.value: t for t in EventType}  # a dict lookup is 10x cheaper than EventType(s)
_COLUMNS = "event_id, user_id, video_id, type, ts, watch_ms, request_id, surface"


def _row(e: Event) -> tuple[object, ...]:
    return (
        e.event_id,
        e.user_id,
        e.video_id,
        e.type.value,
        e.ts,
        e.watch_ms,
        e.request_id,
        e.surface,
    )


class SqliteEventLog:
    """The embedded event log: one SQLite table, fsynced on every append (WAL, FULL)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._conn = connect(path, "fsync")
        self._conn.executescript(_SCHEMA)
        self._lock = threading.Lock()  # the connection
        # Reads on a connection of their own (WAL: they see what was committed when they
        # start): a learning step's read does not wait for an append's fsync, which the
        # server makes off its event loop while that loop folds the log.
        self._reader = connect(path, "fsync")
        self._reading = threading.Lock()
        # Held by every write (before the connection's lock), and by a scrub, which
        # writes on a connection of its own: reads go on meanwhile.
        self._writing = threading.Lock()
        # The log's end, kept here: it is asked for by every learning step and health
        # check, and only this object's appends move it (one writer per log).
        self._last = self._sequence()

    def _sequence(self) -> int:
        # The AUTOINCREMENT counter, not MAX(offset): deleting the newest events (an
        # erasure) must not move the end of the log back below what was applied.
        row = self._conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        return 0 if row is None else int(row[0])

    def append(self, events: Sequence[Event]) -> AppendResult:
        if not events:
            return AppendResult([], [])
        first: dict[str, int] = {}
        duplicates: list[int] = []
        for i, e in enumerate(events):
            if e.event_id in first:
                duplicates.append(i)
            else:
                first[e.event_id] = i
        with self._writing, self._lock:
            known = self._existing(list(first))
            fresh = [i for eid, i in first.items() if eid not in known]
            duplicates.extend(first[eid] for eid in known)
            if fresh:
                # synchronous=FULL: fsynced before the COMMIT returns
                with transaction(self._conn) as cur:
                    cur.executemany(
                        f"INSERT INTO events ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)",
                        [_row(events[i]) for i in fresh],
                    )
                    last = self._sequence()
                self._last = last  # once committed
            # (with nothing written, the end as stored: another process may have moved it)
            end = self._last if fresh else self._sequence()
        duplicates.sort()
        return AppendResult(fresh, duplicates, end)

    def _existing(self, event_ids: list[str]) -> set[str]:
        found: set[str] = set()
        # Stay well under SQLite's bound-parameter limit.
        for start in range(0, len(event_ids), 900):
            chunk = event_ids[start : start + 900]
            marks = ",".join("?" * len(chunk))
            rows = self._conn.execute(
                f"SELECT event_id FROM events WHERE event_id IN ({marks})", chunk
            )
            found.update(r[0] for r in rows)
        return found

    def read(self, after_offset: int, limit: int) -> list[LoggedEvent]:
        with self._reading:
            rows = self._reader.execute(
                f"SELECT offset, {_COLUMNS} FROM events WHERE offset > ? ORDER BY offset LIMIT ?",
                (after_offset, limit),
            ).fetchall()
        return [
            LoggedEvent(r[0], Event(r[1], r[2], r[3], _TYPES[r[4]], r[5], r[6], r[7], r[8]))
            for r in rows
        ]

    def iter_all(self, batch: int = 10_000) -> Iterator[LoggedEvent]:
        offset = 0
        while rows := self.read(offset, batch):
            yield from rows
            offset = rows[-1].offset

    def last_offset(self) -> int:
        return self._last

    def follow(self) -> int:
        with self._reading:
            row = self._reader.execute(
                "SELECT seq FROM sqlite_sequence WHERE name = 'events'"
            ).fetchone()
        self._last = max(self._last, 0 if row is None else int(row[0]))
        return self._last

    def count(self) -> int:
        with self._reading:
            return int(self._reader.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def contains(self, event_id: str) -> bool:
        with self._reading:
            row = self._reader.execute(
                "SELECT 1 FROM events WHERE event_id = ?", (event_id,)
            ).fetchone()
        return row is not None

    def for_user(self, user_id: str) -> list[LoggedEvent]:
        with self._reading:
            rows = self._reader.execute(
                f"SELECT offset, {_COLUMNS} FROM events WHERE user_id = ? ORDER BY offset",
                (user_id,),
            ).fetchall()
        return [
            LoggedEvent(r[0], Event(r[1], r[2], r[3], _TYPES[r[4]], r[5], r[6], r[7], r[8]))
            for r in rows
        ]

    def _delete(self, where: str, arg: object) -> int:
        with self._writing, self._lock:
            return delete_where(self._conn, "events", where, arg)

    def erase_user(self, user_id: str) -> int:
        return self._delete("user_id = ?", user_id)

    def scrub(self) -> None:
        # Not on the shared connection, which the learning step reads through while it
        # holds the engine's lock: a VACUUM of seconds there would stop every feed.
        # (WAL: the reads see the log as it was until the rewrite commits.)
        with self._writing:
            conn = connect(self._path, "fsync")
            try:
                scrub(conn)
            finally:
                conn.close()

    def delete_before(self, ts: int) -> int:
        return self._delete("ts < ?", ts)

    def commit(self, reader: str, offset: int) -> None:
        pass  # (never trimmed but by retention: see EventLog.commit)

    def close(self) -> None:
        with self._reading:
            self._reader.close()
        with self._lock:
            self._conn.close()
