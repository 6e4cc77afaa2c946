"""API keys (``keys.db``): who may call the API, for what, and for which region's users.

A token is ``fyp_<key_id>_<secret>``. It is shown once, when the key is created, and never
stored: the store keeps only its SHA-256. A plain hash (no salt, no slow KDF) is enough
because the secret is 256 random bits, not a password a dictionary could guess; it also
keeps ``authenticate``, which runs on every request, at microseconds.

The key id inside the token is public (it is logged and audited) and names the row, so a
lookup never scans and never compares against more than one hash.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import hmac
import logging
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from fyp.storage.sqlite import connect
from fyp.types import now_ms

log = logging.getLogger(__name__)

SCOPES: tuple[str, ...] = (
    "events:write",
    "feed:read",
    "catalog:write",
    "moderation:write",
    "users:admin",
    "audit:read",
    # Issue user tokens (fyp.privacy.tokens): short-lived, bound to one user, for a client
    # (the web player, a mobile app) that must not hold a service key.
    "tokens:issue",
)
KEYS_FILE = "keys.db"  # in the data directory

_TOKEN_PREFIX = "fyp_"
_KEY_ID = re.compile(r"k_[0-9a-f]{10}")
_KEY_ID_LEN = 12
_MAX_TOKEN_LEN = 256  # ours are 60 characters; anything far longer is not worth hashing
# How long a cached key is trusted before its row is read again: the bound on how long a
# revocation made by another process (``fyp keys revoke`` while the server runs) takes.
RECHECK_S = 2.0


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str  # public, short: "k_" + 10 hex chars; safe to log and audit
    scopes: frozenset[str]
    region: str | None  # the region whose users this key may touch (None: the deployment's)
    label: str
    created_at: int  # Unix ms
    revoked_at: int | None = None
    # Bumped to revoke every user token this key issued so far (the key itself stays).
    token_epoch: int = 0

    def allows(self, scope: str) -> bool:
        """Whether this key grants ``scope``; a revoked key grants nothing."""
        return self.revoked_at is None and scope in self.scopes


class UnknownScopeError(ValueError):
    pass


def validate_scopes(scopes: Iterable[str]) -> frozenset[str]:
    """``scopes`` as a set; :class:`UnknownScopeError` if one is unknown or there is none."""
    granted = frozenset(scopes)
    unknown = sorted(granted - set(SCOPES))
    if unknown or not granted:
        what = f"unknown scope(s) {', '.join(unknown)}" if unknown else "no scope given"
        raise UnknownScopeError(f"{what}; known scopes: {', '.join(SCOPES)}")
    return granted


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _key_id_of(token: str) -> str | None:
    """The key id a well-formed token names, else None (cheap checks only)."""
    if len(token) > _MAX_TOKEN_LEN or not token.startswith(_TOKEN_PREFIX):
        return None
    end = len(_TOKEN_PREFIX) + _KEY_ID_LEN
    key_id = token[len(_TOKEN_PREFIX) : end]
    if token[end : end + 1] != "_" or len(token) == end + 1 or not _KEY_ID.fullmatch(key_id):
        return None
    return key_id


_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    key_id     TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL,
    scopes     TEXT NOT NULL,
    region     TEXT,
    label      TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER,
    token_epoch INTEGER NOT NULL DEFAULT 0
);
"""
# A keys.db made before user tokens: its keys start at epoch 0.
_ADD_EPOCH = "ALTER TABLE api_keys ADD COLUMN token_epoch INTEGER NOT NULL DEFAULT 0"
KEY_COLUMNS = "key_id, token_hash, scopes, region, label, created_at, revoked_at, token_epoch"

KeyRow = tuple[Any, ...]  # KEY_COLUMNS, in order
_MARKS = ",".join("?" * len(KEY_COLUMNS.split(",")))


def _from_row(row: KeyRow) -> tuple[str, ApiKey]:
    key_id, token_hash, scopes, region, label, created_at, revoked_at, token_epoch = row
    key = ApiKey(
        str(key_id),
        frozenset(str(scopes).split()),
        None if region is None else str(region),
        str(label),
        int(created_at),
        None if revoked_at is None else int(revoked_at),
        int(token_epoch),
    )
    return str(token_hash), key


@dataclass(slots=True)
class _Cached:
    token_hash: str
    key: ApiKey
    read_at: float  # monotonic seconds


class KeyStore:
    """The keys, every one also in memory so that ``authenticate`` rarely asks the
    store's backend; a backend (:class:`SqliteKeyStore`, the PostgreSQL
    ``fyp.storage.postgres.keys.PgKeyStore``) supplies the table's reads and writes and a
    version that changes when another process writes.

    Freshness against other processes: a cache entry older than ``recheck_s`` (so
    another process's revocation takes effect within that), or a key id missing from the
    cache (so a key created by another process works at once), makes the store ask the
    backend whether another process has written since it last read the keys (a version
    number, no row of the table read), and read them all again only then. So no token,
    an unknown id least of all (a guess, a flood of them), costs a lookup of its own.
    """

    def __init__(self, recheck_s: float, clock: Callable[[], float]) -> None:
        self._lock = threading.Lock()  # FastAPI may call from its threadpool
        self._recheck_s = recheck_s
        self._clock = clock
        self._cache: dict[str, _Cached] = {}
        self._version = -1  # the backend's version at the last full read

    # -- the backend's part ------------------------------------------------------------

    def _data_version(self) -> int:
        """A number that changes whenever another process has written the keys."""
        raise NotImplementedError

    def _rows(self, ordered: bool = False) -> builtins.list[KeyRow]:
        """Every row (``KEY_COLUMNS``); oldest first when ``ordered``."""
        raise NotImplementedError

    def _insert(self, row: KeyRow) -> bool:
        """Store a new key's row; False if its id is taken."""
        raise NotImplementedError

    def _set_revoked(self, key_id: str, now: int) -> bool:
        """Mark a live key revoked; False if there is no such live key."""
        raise NotImplementedError

    def _next_epoch(self, key_id: str) -> int | None:
        """Bump a live key's token epoch; the new epoch, None if no such live key."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # -- the cache ---------------------------------------------------------------------

    def _read_all(self) -> None:
        """Every key into the cache (a few rows: keys are made by hand). The version is
        read first: a commit racing the SELECT then only causes one more read later."""
        self._version = self._data_version()
        now = self._clock()
        self._cache = {}
        for row in self._rows():
            token_hash, key = _from_row(row)
            self._cache[key.key_id] = _Cached(token_hash, key, now)

    def _checked(self, key_id: str) -> _Cached | None:
        """``key_id``'s entry, known to be current: the keys read again if another
        process has written since they were read, else the entry confirmed as is."""
        with self._lock:
            if self._data_version() != self._version:
                self._read_all()
            entry = self._cache.get(key_id)
            if entry is not None:
                entry.read_at = self._clock()
            return entry

    @property
    def recheck_s(self) -> float:
        return self._recheck_s

    def refresh(self) -> None:
        """Every cached entry confirmed current, as a request's recheck would (the keys
        read again if another process wrote since): :class:`KeyRefresher` calls it off
        the request path, so requests find their entries fresh and do not wait for the
        backend. An entry counts as read when the check began: a revocation committed
        after that is in force here within ``recheck_s`` of it, as before."""
        began = self._clock()
        with self._lock:
            if self._data_version() != self._version:
                self._read_all()
            for entry in self._cache.values():
                entry.read_at = max(entry.read_at, began)

    def create(
        self, scopes: Iterable[str], region: str | None, label: str, now: int
    ) -> tuple[ApiKey, str]:
        """A new key and its token; the token is not kept anywhere and cannot be recovered."""
        granted = validate_scopes(scopes)
        stored_scopes = " ".join(sorted(granted))
        with self._lock:
            while True:
                key = ApiKey("k_" + secrets.token_hex(5), granted, region, label, now)
                token = f"{_TOKEN_PREFIX}{key.key_id}_{secrets.token_urlsafe(32)}"
                token_hash = _hash(token)
                row = (key.key_id, token_hash, stored_scopes, region, label, now, None, 0)
                if self._insert(row):
                    break  # (else a 40-bit id collided with an existing one: draw another)
            self._cache[key.key_id] = _Cached(token_hash, key, self._clock())
        return key, token

    def _entry(self, key_id: str, ask_about_unknown: bool = True) -> _Cached | None:
        """``key_id``'s cached entry, checked against the table when it is stale (or
        missing, unless ``ask_about_unknown`` is False)."""
        entry = self._cache.get(key_id)
        if entry is None and not ask_about_unknown:
            return None
        if entry is None or self._clock() - entry.read_at > self._recheck_s:
            entry = self._checked(key_id)
        return entry

    def lookup(self, key_id: str) -> ApiKey | None:
        """The key ``key_id`` as recently stored (revoked or not), None if there is none:
        for a user token, which names its issuing key and carries no key secret."""
        entry = self._entry(key_id) if _KEY_ID.fullmatch(key_id) else None
        return None if entry is None else entry.key

    def authenticate(self, token: str, *, ask_about_unknown: bool = True) -> ApiKey | None:
        """The live key ``token`` belongs to; None if it is malformed, unknown or revoked.
        ``ask_about_unknown=False``: an id missing from the cache is taken as unknown,
        without asking the backend whether another process made it (for a caller already
        refused for failing too often, a key made a moment ago can wait)."""
        key_id = _key_id_of(token)
        if key_id is None:
            return None
        entry = self._entry(key_id, ask_about_unknown)
        if entry is None:
            return None
        # Constant-time: the time taken says nothing about how much of the hash matched.
        if not hmac.compare_digest(_hash(token), entry.token_hash):
            return None
        return entry.key if entry.key.revoked_at is None else None

    def list(self) -> builtins.list[ApiKey]:
        """Every key, revoked ones included, oldest first."""
        with self._lock:
            rows = self._rows(ordered=True)
        return [_from_row(row)[1] for row in rows]

    def revoke(self, key_id: str, now: int) -> bool:
        """Revoke ``key_id`` for good; False if there is no such key or it already was."""
        with self._lock:
            done = self._set_revoked(key_id, now)
            entry = self._cache.get(key_id)
            if done and entry is not None:
                entry.key = replace(entry.key, revoked_at=now)
        return done

    def revoke_tokens(self, key_id: str) -> int | None:
        """Revoke every user token ``key_id`` has issued (the key itself keeps working):
        its token epoch goes up by one, and a token carries the epoch it was issued in.
        The new epoch; None if there is no such live key."""
        with self._lock:
            epoch = self._next_epoch(key_id)
            if epoch is None:
                return None
            entry = self._cache.get(key_id)
            if entry is not None:
                entry.key = replace(entry.key, token_epoch=epoch)
        return epoch


class KeyRefresher:
    """A thread that calls ``store.refresh()`` every ``recheck_s / 2``: a key check on
    the request path (the backend asked once per key and ``recheck_s``) was a
    round trip to PostgreSQL on the API's event loop, which served nothing meanwhile. A
    refresh that fails (the server down) leaves the entries to go stale: requests then
    recheck them themselves, and a key that cannot be checked is not trusted."""

    def __init__(self, store: KeyStore, every_s: float | None = None) -> None:
        self.store = store
        self.every_s = store.recheck_s / 2 if every_s is None else every_s
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fyp-keys", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.store.refresh()
            except Exception as err:  # (the backend down: the requests recheck, or 503)
                if self.error is None:
                    log.warning("cannot refresh the API keys (%s); retrying", err)
                self.error = f"{type(err).__name__}: {err}"
            else:
                self.error = None


class SqliteKeyStore(KeyStore):
    """Keys in ``keys.db``; the version is SQLite's ``PRAGMA data_version``, which
    changes when another connection commits to the file (our own commits do not change
    it, and they update the cache themselves)."""

    def __init__(
        self,
        path: Path,
        *,
        recheck_s: float = RECHECK_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(recheck_s, clock)
        self._conn = connect(path, "fsync")  # Path(":memory:") opens a private in-memory db
        self._conn.executescript(_SCHEMA)
        columns = {row[1] for row in self._conn.execute("PRAGMA table_info(api_keys)")}
        if "token_epoch" not in columns:
            # Another process (the server, the CLI) may have added it meanwhile.
            with contextlib.suppress(sqlite3.OperationalError):
                self._conn.execute(_ADD_EPOCH)
        with self._lock:
            self._read_all()

    def _data_version(self) -> int:
        return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def _rows(self, ordered: bool = False) -> builtins.list[KeyRow]:
        order = " ORDER BY created_at, rowid" if ordered else ""
        return self._conn.execute(f"SELECT {KEY_COLUMNS} FROM api_keys{order}").fetchall()

    def _insert(self, row: KeyRow) -> bool:
        try:
            self._conn.execute(f"INSERT INTO api_keys ({KEY_COLUMNS}) VALUES ({_MARKS})", row)
        except sqlite3.IntegrityError:
            return False
        return True

    def _set_revoked(self, key_id: str, now: int) -> bool:
        cur = self._conn.execute(
            "UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
            (now, key_id),
        )
        return cur.rowcount == 1

    def _next_epoch(self, key_id: str) -> int | None:
        rows = self._conn.execute(
            "UPDATE api_keys SET token_epoch = token_epoch + 1 "
            "WHERE key_id = ? AND revoked_at IS NULL RETURNING token_epoch",
            (key_id,),
        ).fetchall()  # all: the statement, and so its commit, completes
        return int(rows[0][0]) if rows else None

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def create_key(
    data_dir: Path,
    scopes: Iterable[str] = SCOPES,
    region: str | None = None,
    label: str = "",
    store_url: str | None = None,
) -> tuple[ApiKey, str]:
    """A new key in the key store (``data_dir``'s, or the one at ``store_url``), opened
    and closed here: for programs that drive their own server (the simulations, the
    benchmarks, tests). Not audited: an operator's keys are made with ``fyp keys
    create``."""
    from fyp.storage.backends import open_key_store  # (which imports this module)

    store = open_key_store(store_url, data_dir)
    try:
        return store.create(scopes, region, label, now_ms())
    finally:
        store.close()


def bearer(token: str) -> dict[str, str]:
    """The request headers that carry ``token``."""
    return {"Authorization": f"Bearer {token}"}
