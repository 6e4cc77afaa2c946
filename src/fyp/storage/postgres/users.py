"""Users' profiles, controls, refresh marks and erasure tombstones in PostgreSQL: the
:class:`~fyp.users.store.UserStore` contract, each write committed (and flushed to the
server's WAL) before it returns."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from psycopg.types.json import Jsonb

from fyp.storage.changes import UsersChanged
from fyp.storage.postgres.database import ChangesRead, Database
from fyp.types import UserProfile
from fyp.users.store import StoredUser

_PROFILE_COLUMNS = "user_id, age_band, language, region, created_at, updated_at, attributes"
USER_TABLES = ("profiles", "controls", "refreshes", "erasures", "user_handles")


def _profile(row: tuple[Any, ...]) -> UserProfile:
    u, a, lang, r, c, up, attrs = row
    return UserProfile(u, a, lang, r, int(c), int(up), tuple(sorted(attrs.items())))


class PgUserStore(ChangesRead):
    def __init__(self, db: Database) -> None:
        self._db = db.attach()

    def _write(self, query: str, args: tuple[Any, ...]) -> None:
        with self._db.transaction() as cur:
            cur.execute(query.encode(), args)

    def put_profile(self, profile: UserProfile) -> None:
        self.put_profiles([profile])

    def put_profiles(self, profiles: Sequence[UserProfile]) -> None:
        """Insert or update these profiles in one transaction."""
        if not profiles:
            return
        with self._db.transaction() as cur:
            cur.executemany(
                f"INSERT INTO profiles ({_PROFILE_COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s,%s)"
                " ON CONFLICT (user_id) DO UPDATE SET age_band = excluded.age_band,"
                " language = excluded.language, region = excluded.region,"
                " updated_at = excluded.updated_at, attributes = excluded.attributes",
                [
                    (
                        p.user_id,
                        p.age_band,
                        p.language,
                        p.region,
                        p.created_at,
                        p.updated_at,
                        Jsonb(dict(p.attributes)),
                    )
                    for p in profiles
                ],
            )

    def profiles(self) -> dict[str, UserProfile]:
        with self._db.transaction() as cur:
            rows = cur.execute(f"SELECT {_PROFILE_COLUMNS} FROM profiles ORDER BY seq").fetchall()
        return {str(row[0]): _profile(row) for row in rows}

    def put_controls(self, user_id: str, controls: dict[str, Any], ts: int) -> None:
        self._write(
            "INSERT INTO controls (user_id, settings, updated_at) VALUES (%s,%s,%s)"
            " ON CONFLICT (user_id) DO UPDATE SET settings = excluded.settings,"
            " updated_at = excluded.updated_at",
            (user_id, Jsonb(controls), ts),
        )

    def controls(self) -> dict[str, dict[str, Any]]:
        with self._db.transaction() as cur:
            rows = cur.execute("SELECT user_id, settings FROM controls").fetchall()
        return {str(u): dict(s) for u, s in rows}

    def add_refresh(self, user_id: str, log_offset: int, ts: int) -> None:
        self._write(
            "INSERT INTO refreshes (user_id, log_offset, ts) VALUES (%s,%s,%s)",
            (user_id, log_offset, ts),
        )

    def refreshes(self) -> list[tuple[str, int, int]]:
        with self._db.transaction() as cur:
            rows = cur.execute(
                "SELECT user_id, log_offset, ts FROM refreshes ORDER BY id"
            ).fetchall()
        return [(str(u), int(o), int(t)) for u, o, t in rows]

    def add_tombstone(self, user_id: str, audit_ref: str, ts: int) -> None:
        self._write(
            "INSERT INTO erasures (user_id, audit_ref, ts) VALUES (%s,%s,%s)"
            " ON CONFLICT (user_id) DO NOTHING",
            (user_id, audit_ref, ts),
        )

    def tombstones(self) -> dict[str, str]:
        with self._db.transaction() as cur:
            rows = cur.execute("SELECT user_id, audit_ref FROM erasures").fetchall()
        return {str(u): str(r) for u, r in rows}

    def user(self, user_id: str) -> StoredUser:
        with self._db.transaction() as cur:
            profile = cur.execute(
                f"SELECT {_PROFILE_COLUMNS} FROM profiles WHERE user_id = %s", (user_id,)
            ).fetchone()
            controls = cur.execute(
                "SELECT settings FROM controls WHERE user_id = %s", (user_id,)
            ).fetchone()
            marks = cur.execute(
                "SELECT log_offset FROM refreshes WHERE user_id = %s ORDER BY id", (user_id,)
            ).fetchall()
            ref = cur.execute(
                "SELECT audit_ref FROM erasures WHERE user_id = %s", (user_id,)
            ).fetchone()
        return StoredUser(
            None if profile is None else _profile(profile),
            None if controls is None else dict(controls[0]),
            tuple(int(m[0]) for m in marks),
            None if ref is None else str(ref[0]),
        )

    def users_since(self, cursor: int) -> UsersChanged:
        since = (str(cursor),) * 3
        with self._db.transaction() as cur:
            after = self._db.change_cursor(cur)
            erased = (
                cur.execute(
                    "SELECT 1 FROM erasures_completed WHERE changed_xid >= %s::text::xid8",
                    (str(cursor),),
                ).fetchone()
                is not None
            )
            ids = [
                str(r[0])
                for r in cur.execute(
                    "SELECT user_id FROM profiles WHERE changed_xid >= %s::text::xid8"
                    " UNION SELECT user_id FROM controls WHERE changed_xid >= %s::text::xid8"
                    " UNION SELECT user_id FROM refreshes WHERE changed_xid >= %s::text::xid8",
                    since,
                ).fetchall()
            ]
            if not ids:
                return UsersChanged({}, erased, after)
            profiles = {
                str(r[0]): _profile(r)
                for r in cur.execute(
                    f"SELECT {_PROFILE_COLUMNS} FROM profiles WHERE user_id = ANY(%s)", (ids,)
                ).fetchall()
            }
            controls = {
                str(u): dict(s)
                for u, s in cur.execute(
                    "SELECT user_id, settings FROM controls WHERE user_id = ANY(%s)", (ids,)
                ).fetchall()
            }
            marks: dict[str, list[int]] = {}
            for u, o in cur.execute(
                "SELECT user_id, log_offset FROM refreshes WHERE user_id = ANY(%s) ORDER BY id",
                (ids,),
            ).fetchall():
                marks.setdefault(str(u), []).append(int(o))
            refs = {
                str(u): str(r)
                for u, r in cur.execute(
                    "SELECT user_id, audit_ref FROM erasures WHERE user_id = ANY(%s)", (ids,)
                ).fetchall()
            }
        users = {
            pid: StoredUser(
                profiles.get(pid), controls.get(pid), tuple(marks.get(pid, ())), refs.get(pid)
            )
            for pid in ids
        }
        return UsersChanged(users, erased, after)

    def handle(self, user_id: str) -> str:
        with self._db.transaction() as cur:
            cur.execute(
                "INSERT INTO user_handles (user_id, handle) VALUES (%s, %s)"
                " ON CONFLICT (user_id) DO NOTHING",
                (user_id, secrets.token_hex(16)),
            )
            row = cur.execute(
                "SELECT handle FROM user_handles WHERE user_id = %s", (user_id,)
            ).fetchone()
        assert row is not None  # (inserted above, or there before)
        return str(row[0])

    def user_of_handle(self, handle: str) -> str | None:
        with self._db.transaction() as cur:
            row = cur.execute(
                "SELECT user_id FROM user_handles WHERE handle = %s", (handle,)
            ).fetchone()
        return None if row is None else str(row[0])

    def erase(self, user_id: str) -> None:
        with self._db.transaction() as cur:
            for table in USER_TABLES:
                cur.execute(f"DELETE FROM {table} WHERE user_id = %s".encode(), (user_id,))
            cur.execute("UPDATE erasures_completed SET n = n + 1")  # (whose: not said)
        # The deleted rows' tuples stay in the tables' pages until they are rewritten:
        # VACUUM FULL writes each table anew from the rows that remain (small tables).
        with self._db.autocommit() as conn:
            conn.execute(f"VACUUM FULL {', '.join(USER_TABLES)}".encode())

    def close(self) -> None:
        self._db.release()
