"""The API keys in PostgreSQL: :class:`~fyp.privacy.keys.KeyStore` with its table in
the deployment's schema, so that every API process and the ``fyp keys`` commands given
the same store URL share them.

Each write is one transaction that also bumps ``api_keys_version``; a process reads the
keys again only when that number has moved since it last read them, and asks for it
(one single-row read) when a cached key is older than ``recheck_s`` or an id is not in
its cache. So a key made anywhere works at once everywhere, and a revocation made in one
process is in force in every other within ``recheck_s`` (1 s)."""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable

import psycopg

from fyp.privacy.keys import KEY_COLUMNS, KeyRow, KeyStore
from fyp.storage.postgres.database import Database

# Issue 21's bound on a change made in one API process being in force in the others.
PG_RECHECK_S = 1.0
_MARKS = ",".join(["%s"] * len(KEY_COLUMNS.split(",")))
_BUMP = "UPDATE api_keys_version SET version = version + 1"


class PgKeyStore(KeyStore):
    def __init__(
        self,
        db: Database,
        *,
        recheck_s: float = PG_RECHECK_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(recheck_s, clock)
        self._db = db.attach()
        try:
            with self._lock:
                self._read_all()
        except BaseException:
            self._db.release()
            raise

    def _data_version(self) -> int:
        with self._db.transaction() as cur:
            row = cur.execute("SELECT version FROM api_keys_version").fetchone()
        return 0 if row is None else int(row[0])

    def _rows(self, ordered: bool = False) -> builtins.list[KeyRow]:
        order = " ORDER BY created_at, seq" if ordered else ""
        with self._db.transaction() as cur:
            return cur.execute(f"SELECT {KEY_COLUMNS} FROM api_keys{order}".encode()).fetchall()

    def _insert(self, row: KeyRow) -> bool:
        try:
            with self._db.transaction() as cur:
                cur.execute(f"INSERT INTO api_keys ({KEY_COLUMNS}) VALUES ({_MARKS})".encode(), row)
                cur.execute(_BUMP)
        except psycopg.errors.UniqueViolation:
            return False
        return True

    def _set_revoked(self, key_id: str, now: int) -> bool:
        with self._db.transaction() as cur:
            cur.execute(
                "UPDATE api_keys SET revoked_at = %s WHERE key_id = %s AND revoked_at IS NULL",
                (now, key_id),
            )
            done = cur.rowcount == 1
            if done:
                cur.execute(_BUMP)
        return done

    def _next_epoch(self, key_id: str) -> int | None:
        with self._db.transaction() as cur:
            row = cur.execute(
                "UPDATE api_keys SET token_epoch = token_epoch + 1"
                " WHERE key_id = %s AND revoked_at IS NULL RETURNING token_epoch",
                (key_id,),
            ).fetchone()
            if row is None:
                return None
            cur.execute(_BUMP)
        return int(row[0])

    def close(self) -> None:
        self._db.release()
