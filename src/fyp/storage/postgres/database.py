"""A PostgreSQL server as a deployment's stores: its URL, the pool of connections that
every store of a process shares, the schema's migrations, and the server's faults told
apart from bugs (:class:`~fyp.storage.errors.StorageUnavailableError`).

The URL: :mod:`fyp.storage.postgres.url`.

Every write is a transaction committed before the store returns. Sessions run with
``synchronous_commit=on``, so a commit returns once the server has flushed it to its
WAL on disk: an acknowledged write survives a kill -9 or a crash of the server. (The
impression log alone relaxes this, per transaction, as its SQLite twin does.)"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout

from fyp.storage.errors import StorageUnavailableError
from fyp.storage.postgres.url import split_url

MIGRATIONS = Path(__file__).parent / "migrations"
POOL_SIZE = 8  # connections a process holds at most (a request holds one for one statement)
POOL_TIMEOUT_S = 5.0  # a store waiting longer for a connection (server down): 503
# Once the server could not be reached, the stores fail at once for this long rather than
# wait the pool's timeout again: a request touching several stores (its key, then its
# writes) would otherwise wait once for each, past a client's patience, while the server
# is down. Short: the server may be back sooner.
DOWN_HOLD_S = 1.0
_MIGRATION_FILE = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql\Z")


class PgDurabilityError(RuntimeError):
    """The server does not keep what it acknowledges (``fsync = off``)."""


@contextlib.contextmanager
def reaching() -> Iterator[None]:
    """The server's faults (down, restarting, a connection cut, no connection free in
    time) as :class:`StorageUnavailableError`, which the API answers with 503 and a
    Retry-After. A write cut off so may or may not have been committed."""
    try:
        yield
    except (psycopg.OperationalError, PoolTimeout) as err:
        raise StorageUnavailableError(f"the PostgreSQL server: {err}") from err


def migrations(folder: Path = MIGRATIONS) -> list[tuple[int, str, str]]:
    """(version, name, SQL) of every migration file, by version."""
    found: dict[int, tuple[int, str, str]] = {}
    for path in folder.iterdir():
        match = _MIGRATION_FILE.match(path.name)
        if match is None:
            continue
        version = int(match[1])
        if version in found:
            raise ValueError(f"two migrations numbered {version} in {folder}")
        found[version] = (version, match[2], path.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


class Database:
    """One server (and schema) that the stores of a process share: a pool of
    connections, opened with the schema migrated, closed when the last store using it
    (:meth:`attach`) closes (:meth:`release`)."""

    def __init__(self, url: str, pool_size: int = POOL_SIZE) -> None:
        self.url = split_url(url)
        options = f"-c search_path={self.url.schema} -c synchronous_commit=on"
        self.pool = ConnectionPool(
            self.url.conninfo,
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True, "options": options},
            timeout=POOL_TIMEOUT_S,
            open=False,
            name=f"fyp-{self.url.schema}",
        )
        self._users = 0
        self._lock = threading.Lock()
        self._down_until = 0.0  # (time.monotonic): fail at once until then
        try:
            with reaching():
                self.pool.open(wait=True, timeout=POOL_TIMEOUT_S)
            self._check_durability()
            self.migrate()
        except BaseException:
            self.pool.close()
            raise

    def _check_durability(self) -> None:
        if self.url.durability == "none":
            return
        with self.transaction() as cur:
            fsync = cur.execute("SHOW fsync").fetchone()
        if fsync is None or fsync[0] != "on":
            raise PgDurabilityError(
                "the PostgreSQL server runs with fsync = off: a crash could lose writes it "
                "acknowledged; turn fsync on, or add durability=none to the URL"
            )

    @contextlib.contextmanager
    def _reaching(self) -> Iterator[None]:
        """:func:`reaching`, failing at once for :data:`DOWN_HOLD_S` after the server
        could not be reached (no connection in time). Not after a pooled connection
        failed (an error without a SQLSTATE): that failed at once, the pool discards it,
        and after a restart the server is back: a hold per such connection answered 503
        for as many seconds as the pool held connections."""
        if time.monotonic() < self._down_until:
            raise StorageUnavailableError("the PostgreSQL server could not be reached just now")
        try:
            with reaching():
                yield
        except StorageUnavailableError as err:
            if isinstance(err.__cause__, PoolTimeout):
                self._down_until = time.monotonic() + DOWN_HOLD_S
            raise

    @contextlib.contextmanager
    def transaction(self) -> Iterator[psycopg.Cursor[Any]]:
        """A cursor in one transaction, committed when the block ends (rolled back if it
        raises); the connection goes back to the pool after."""
        with (
            self._reaching(),
            self.pool.connection() as conn,
            conn.transaction(),
            conn.cursor() as cur,
        ):
            yield cur

    @contextlib.contextmanager
    def autocommit(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection outside any transaction (for VACUUM, which cannot run in one)."""
        with self._reaching(), self.pool.connection() as conn:
            yield conn

    def migrate(self) -> list[int]:
        """Apply the migrations this schema lacks, in order, each recorded in
        ``schema_migrations``; returns the versions applied. Under an advisory lock
        held to the commit: processes opening the same schema at once apply each
        migration once, the later ones waiting and then finding nothing to do."""
        files = migrations()
        applied: list[int] = []
        with self.transaction() as cur:
            cur.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                (f"fyp.migrations:{self.url.schema}",),
            )
            cur.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.url.schema))
            )
            cur.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
                " name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            done = {int(r[0]) for r in cur.execute("SELECT version FROM schema_migrations")}
            newest = max((v for v, _, _ in files), default=0)
            if done and max(done) > newest:
                raise RuntimeError(
                    f"the PostgreSQL schema {self.url.schema!r} was migrated to version "
                    f"{max(done)} by a newer fyp; this one knows up to {newest}"
                )
            for version, name, text in files:
                if version in done:
                    continue
                cur.execute(text.encode())  # (several statements: sent as one query)
                cur.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    (version, name),
                )
                applied.append(version)
        return applied

    def change_cursor(self, cur: psycopg.Cursor[Any]) -> int:
        """The oldest transaction id still running (or the next to be assigned):
        every row written by a transaction before it is committed and visible to any
        statement after this one (migration 0004_change_cursors)."""
        row = cur.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text").fetchone()
        assert row is not None
        return int(row[0])

    def attach(self) -> Database:
        """Count one more store using this database."""
        with self._lock:
            self._users += 1
        return self

    def release(self) -> None:
        """One store is done with it: the pool is closed after the last."""
        with self._lock:
            self._users -= 1
            last = self._users <= 0
        if last:
            self.pool.close()


class ChangesRead:
    """What every PostgreSQL store that can say what changed since a cursor shares
    (:mod:`fyp.storage.changes`): the cursor now, in a transaction of its own."""

    _db: Database

    def change_cursor(self) -> int:
        with self._db.transaction() as cur:
            return self._db.change_cursor(cur)
