"""Where users' profiles, controls and refresh requests are kept (``users.db``).

Every write is fsynced before the API answers. A refresh is kept as the event-log offset
it was asked at: the learning step forgets the user's personalisation when it passes that
offset, so a replay of the log after a restart forgets at the same point.

An erasure is kept here too, from the moment it is accepted until it is complete: its
tombstone (the user's pseudonym and audit reference) is written first and deleted last,
with the profile, so a process killed in between finishes the erasure when it starts
again (:meth:`fyp.engine.Engine.open`). Completed erasures are counted, without saying
whose, so that other processes reading what changed learn that one happened
(:mod:`fyp.storage.changes`)."""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from fyp.storage.changes import UsersChanged
from fyp.storage.sqlite import connect, scrub, transaction
from fyp.storage.sqlite_changes import change_cursor, stamp_changes
from fyp.types import UserProfile


@dataclass(frozen=True, slots=True)
class StoredUser:
    """All a user store holds of one user: what another process re-reads when told the
    user changed (fyp.cluster.changes)."""

    profile: UserProfile | None
    controls: dict[str, Any] | None
    refreshes: tuple[int, ...]  # the log offsets of their refresh marks, oldest first
    tombstone: str | None  # the erasure's audit reference, while one is under way


class UserStore(Protocol):
    def put_profile(self, profile: UserProfile) -> None: ...

    def put_profiles(self, profiles: Sequence[UserProfile]) -> None: ...

    def profiles(self) -> dict[str, UserProfile]: ...

    def put_controls(self, user_id: str, controls: dict[str, Any], ts: int) -> None: ...

    def controls(self) -> dict[str, dict[str, Any]]: ...

    def add_refresh(self, user_id: str, log_offset: int, ts: int) -> None: ...

    def refreshes(self) -> list[tuple[str, int, int]]:
        """(user_id, log offset, ts) of every refresh, oldest first."""
        ...

    def add_tombstone(self, user_id: str, audit_ref: str, ts: int) -> None:
        """Record (durably) that the user's erasure was accepted; again changes nothing."""
        ...

    def tombstones(self) -> dict[str, str]:
        """The users whose erasure was accepted and is not complete -> audit reference."""
        ...

    def user(self, user_id: str) -> StoredUser:
        """Everything held of one user, read in one transaction."""
        ...

    def handle(self, user_id: str) -> str:
        """The user's handle: a random name, made (durably) at the first ask, that the
        notices of their changes carry instead of their pseudonym, and that is deleted
        with them, so a notice outliving an erasure names no one."""
        ...

    def user_of_handle(self, handle: str) -> str | None:
        """The user whose handle this is (None: none, or erased since)."""
        ...

    def erase(self, user_id: str) -> None:
        """Delete the user's profile, controls, refreshes and tombstone in one
        transaction, leaving nothing of them."""
        ...

    def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS profiles (
    user_id    TEXT PRIMARY KEY,
    age_band   TEXT,
    language   TEXT,
    region     TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    attributes TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS controls (
    user_id    TEXT PRIMARY KEY,
    settings   TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS refreshes (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    TEXT NOT NULL,
    log_offset INTEGER NOT NULL,
    ts         INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS erasures (
    user_id    TEXT PRIMARY KEY,
    audit_ref  TEXT NOT NULL,
    ts         INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS user_handles (
    user_id    TEXT PRIMARY KEY,
    handle     TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS erasures_completed (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    n    INTEGER NOT NULL
);
INSERT OR IGNORE INTO erasures_completed (id, n) VALUES (0, 0);
"""
USER_TABLES = ("profiles", "controls", "refreshes", "erasures", "user_handles")
_PROFILE_COLUMNS = "user_id, age_band, language, region, created_at, updated_at, attributes"


def _profile(row: Sequence[Any]) -> UserProfile:
    u, a, lang, r, c, up, attrs = row
    return UserProfile(
        str(u),
        None if a is None else str(a),
        None if lang is None else str(lang),
        None if r is None else str(r),
        int(c),
        int(up),
        tuple(json.loads(str(attrs)).items()),  # (stored sorted by name)
    )


def _migrate(conn: sqlite3.Connection) -> None:
    """A users.db made before profiles kept attributes: its profiles have none."""
    columns = {str(r[1]) for r in conn.execute("PRAGMA table_info(profiles)")}
    if "attributes" not in columns:
        conn.execute("ALTER TABLE profiles ADD COLUMN attributes TEXT NOT NULL DEFAULT '{}'")


def _user(cur: sqlite3.Cursor, user_id: str) -> StoredUser:
    """Everything held of one user, read in the transaction of ``cur``."""
    profile = cur.execute(
        f"SELECT {_PROFILE_COLUMNS} FROM profiles WHERE user_id = ?", (user_id,)
    ).fetchone()
    controls = cur.execute("SELECT settings FROM controls WHERE user_id = ?", (user_id,)).fetchone()
    marks = cur.execute(
        "SELECT log_offset FROM refreshes WHERE user_id = ? ORDER BY id", (user_id,)
    ).fetchall()
    ref = cur.execute("SELECT audit_ref FROM erasures WHERE user_id = ?", (user_id,)).fetchone()
    return StoredUser(
        None if profile is None else _profile(profile),
        None if controls is None else json.loads(str(controls[0])),
        tuple(int(m[0]) for m in marks),
        None if ref is None else str(ref[0]),
    )


class SqliteUserStore:
    def __init__(self, path: Path) -> None:
        self._conn = connect(path, "fsync")
        self._conn.executescript(_SCHEMA)
        _migrate(self._conn)
        stamp_changes(self._conn, ("profiles", "controls", "refreshes", "erasures_completed"))
        self._lock = threading.Lock()

    def _write(self, sql: str, args: tuple[Any, ...]) -> None:
        with self._lock:
            self._conn.execute(sql, args)  # autocommit: one fsynced transaction

    def put_profile(self, profile: UserProfile) -> None:
        self.put_profiles([profile])

    def put_profiles(self, profiles: Sequence[UserProfile]) -> None:
        """Insert or update these profiles in one fsynced transaction."""
        with self._lock, transaction(self._conn) as cur:
            cur.executemany(
                f"INSERT INTO profiles ({_PROFILE_COLUMNS})"
                " VALUES (?,?,?,?,?,?,?) ON CONFLICT (user_id) DO UPDATE SET"
                " age_band = excluded.age_band, language = excluded.language,"
                " region = excluded.region, updated_at = excluded.updated_at,"
                " attributes = excluded.attributes",
                [
                    (
                        p.user_id,
                        p.age_band,
                        p.language,
                        p.region,
                        p.created_at,
                        p.updated_at,
                        json.dumps(dict(p.attributes), sort_keys=True),
                    )
                    for p in profiles
                ],
            )

    def profiles(self) -> dict[str, UserProfile]:
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_PROFILE_COLUMNS} FROM profiles ORDER BY rowid"
            ).fetchall()
        return {str(row[0]): _profile(row) for row in rows}

    def put_controls(self, user_id: str, controls: dict[str, Any], ts: int) -> None:
        self._write(
            "INSERT INTO controls (user_id, settings, updated_at) VALUES (?,?,?)"
            " ON CONFLICT (user_id) DO UPDATE SET settings = excluded.settings,"
            " updated_at = excluded.updated_at",
            (user_id, json.dumps(controls, sort_keys=True), ts),
        )

    def controls(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            rows = self._conn.execute("SELECT user_id, settings FROM controls").fetchall()
        return {str(u): json.loads(str(s)) for u, s in rows}

    def add_refresh(self, user_id: str, log_offset: int, ts: int) -> None:
        self._write(
            "INSERT INTO refreshes (user_id, log_offset, ts) VALUES (?,?,?)",
            (user_id, log_offset, ts),
        )

    def refreshes(self) -> list[tuple[str, int, int]]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT user_id, log_offset, ts FROM refreshes ORDER BY id"
            ).fetchall()
        return [(str(u), int(o), int(t)) for u, o, t in rows]

    def add_tombstone(self, user_id: str, audit_ref: str, ts: int) -> None:
        self._write(
            "INSERT INTO erasures (user_id, audit_ref, ts) VALUES (?,?,?)"
            " ON CONFLICT (user_id) DO NOTHING",
            (user_id, audit_ref, ts),
        )

    def tombstones(self) -> dict[str, str]:
        with self._lock:
            rows = self._conn.execute("SELECT user_id, audit_ref FROM erasures").fetchall()
        return {str(u): str(r) for u, r in rows}

    def user(self, user_id: str) -> StoredUser:
        with self._lock, transaction(self._conn, immediate=False) as cur:
            return _user(cur, user_id)

    def change_cursor(self) -> int:
        with self._lock, transaction(self._conn, immediate=False) as cur:
            return change_cursor(cur)

    def users_since(self, cursor: int) -> UsersChanged:
        with self._lock, transaction(self._conn, immediate=False) as cur:
            after = change_cursor(cur)
            ids = [
                str(r[0])
                for r in cur.execute(
                    "SELECT user_id FROM profiles WHERE changed_seq > ?1"
                    " UNION SELECT user_id FROM controls WHERE changed_seq > ?1"
                    " UNION SELECT user_id FROM refreshes WHERE changed_seq > ?1",
                    (cursor,),
                ).fetchall()
            ]
            erased = cur.execute(
                "SELECT 1 FROM erasures_completed WHERE changed_seq > ?", (cursor,)
            ).fetchone()
            users = {pid: _user(cur, pid) for pid in ids}
        return UsersChanged(users, erased is not None, after)

    def handle(self, user_id: str) -> str:
        with self._lock, transaction(self._conn) as cur:
            cur.execute(
                "INSERT INTO user_handles (user_id, handle) VALUES (?, ?)"
                " ON CONFLICT (user_id) DO NOTHING",
                (user_id, secrets.token_hex(16)),
            )
            row = cur.execute(
                "SELECT handle FROM user_handles WHERE user_id = ?", (user_id,)
            ).fetchone()
        return str(row[0])

    def user_of_handle(self, handle: str) -> str | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT user_id FROM user_handles WHERE handle = ?", (handle,)
            ).fetchone()
        return None if row is None else str(row[0])

    def erase(self, user_id: str) -> None:
        with self._lock:
            with transaction(self._conn) as cur:
                for table in USER_TABLES:
                    cur.execute(f"DELETE FROM {table} WHERE user_id = ?", (user_id,))
                cur.execute("UPDATE erasures_completed SET n = n + 1")  # (whose: not said)
            scrub(self._conn)  # (a small file: profiles and settings)

    def close(self) -> None:
        with self._lock:
            self._conn.close()
