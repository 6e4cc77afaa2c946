"""The stores a deployment uses, chosen by URL (``Settings.store``): the catalog, the
moderation history, the users (profiles, controls, refreshes, erasure tombstones), the
impression log, the audit log and the API keys. (The event log has its own URL:
:mod:`fyp.events.backends`.)

- None (the default): the embedded SQLite files in the data directory.
- ``postgresql://user[:password]@host:port/database[?schema=NAME]``: every store in
  one schema of a PostgreSQL server (:mod:`fyp.storage.postgres`), shared by every
  process given the same URL; see docs/cluster.md.

Only this module and the store modules it opens know the backends."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from fyp.catalog.moderation import ModerationStore, SqliteModerationStore
from fyp.catalog.store import CatalogStore, SqliteCatalogStore
from fyp.events.impressions import ImpressionLog, SqliteImpressionLog
from fyp.privacy.audit_log import AUDIT_FILE, AuditLog, Verification, verify
from fyp.privacy.keys import KEYS_FILE, KeyStore, SqliteKeyStore
from fyp.storage.postgres.url import SCHEMES, split_url
from fyp.types import now_ms
from fyp.users.store import SqliteUserStore, UserStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stores:
    catalog: CatalogStore
    moderation: ModerationStore
    users: UserStore
    impressions: ImpressionLog
    audit: AuditLog

    def close(self) -> None:
        """Close every store (the audit log first: it may write what it counted), also
        when one fails to (the first failure raised after)."""
        with contextlib.ExitStack() as stack:  # (callbacks run last first: the audit log's)
            for store in (
                self.catalog,
                self.moderation,
                self.users,
                self.impressions,
                self.audit,
            ):
                stack.callback(store.close)


def close_quietly(close: Callable[[], None], what: str) -> None:
    """``close()``, a failure logged: called while an error unwinds, which it must not
    replace (the cause the operator needs to see)."""
    try:
        close()
    except Exception as err:
        log.warning("could not close %s after a failed open (%s)", what, err)


def check_store_url(url: str) -> str:
    """``url`` if it names a backend this engine has (its options checked), else a
    ValueError saying what is wrong; nothing is opened."""
    scheme = urlsplit(url).scheme
    if scheme not in SCHEMES:
        raise ValueError(
            f"the store URL's scheme {scheme!r} is none of {', '.join(SCHEMES)} "
            "(for example postgresql://fyp@127.0.0.1:5432/fyp); leave it unset for the "
            "embedded SQLite files"
        )
    split_url(url)
    return url


def open_stores(url: str | None, data_dir: Path, clock: Callable[[], int] = now_ms) -> Stores:
    """The stores at ``url`` (None: the embedded ones in ``data_dir``); ``clock`` times
    the audit log's records."""
    if url is None:
        with contextlib.ExitStack() as undo:  # a store that fails to open: the rest closed
            catalog_file = SqliteCatalogStore(data_dir / "catalog.db")
            undo.callback(close_quietly, catalog_file.close, "the catalog store")
            moderation_file = SqliteModerationStore(data_dir / "moderation.db")
            undo.callback(close_quietly, moderation_file.close, "the moderation store")
            users_file = SqliteUserStore(data_dir / "users.db")
            undo.callback(close_quietly, users_file.close, "the user store")
            impressions_file = SqliteImpressionLog(data_dir / "impressions.db")
            undo.callback(close_quietly, impressions_file.close, "the impression log")
            audit_file = AuditLog(data_dir / AUDIT_FILE, clock)
            undo.pop_all()
        return Stores(catalog_file, moderation_file, users_file, impressions_file, audit_file)
    check_store_url(url)
    from fyp.storage.postgres.audit import PgAuditChain
    from fyp.storage.postgres.catalog import PgCatalogStore, PgModerationStore
    from fyp.storage.postgres.database import Database
    from fyp.storage.postgres.impressions import PgImpressionLog
    from fyp.storage.postgres.users import PgUserStore

    db = Database(url)
    with contextlib.ExitStack() as undo:  # a store that fails to open: the rest closed
        # (the pool held while the stores open)
        undo.callback(close_quietly, db.attach().release, "the database pool")
        catalog = PgCatalogStore(db)
        undo.callback(close_quietly, catalog.close, "the catalog store")
        moderation = PgModerationStore(db)
        undo.callback(close_quietly, moderation.close, "the moderation store")
        users = PgUserStore(db)
        undo.callback(close_quietly, users.close, "the user store")
        impressions = PgImpressionLog(db)
        undo.callback(close_quietly, impressions.close, "the impression log")
        audit = AuditLog(None, clock, chain=PgAuditChain(db))
        undo.pop_all()
    db.release()  # (the stores hold it now)
    return Stores(catalog, moderation, users, impressions, audit)


def has_keys_store(url: str | None, data_dir: Path) -> bool:
    """Whether there is a key store to open (opening the SQLite one creates its file;
    a PostgreSQL schema is created and migrated by whichever store opens it first)."""
    return url is not None or (data_dir / KEYS_FILE).is_file()


def open_key_store(url: str | None, data_dir: Path) -> KeyStore:
    """The API keys at ``url`` (None: ``keys.db`` in ``data_dir``)."""
    if url is None:
        return SqliteKeyStore(data_dir / KEYS_FILE)
    check_store_url(url)
    from fyp.storage.postgres.database import Database
    from fyp.storage.postgres.keys import PgKeyStore

    db = Database(url, pool_size=2).attach()  # (keys are read rarely: cached)
    try:
        return PgKeyStore(db)
    finally:
        db.release()  # (the store holds it, or it failed to open: the pool closes)


def open_audit_log(url: str | None, data_dir: Path) -> AuditLog:
    """The audit log alone (for the commands that record what they change), at ``url``
    (None: ``audit.log`` in ``data_dir``)."""
    if url is None:
        return AuditLog(data_dir / AUDIT_FILE)
    check_store_url(url)
    from fyp.storage.postgres.audit import PgAuditChain
    from fyp.storage.postgres.database import Database

    db = Database(url, pool_size=2).attach()
    try:
        return AuditLog(None, chain=PgAuditChain(db))
    finally:
        db.release()


def verify_audit_log(url: str | None, data_dir: Path) -> Verification:
    """The audit log's chain checked whole (``fyp audit verify``)."""
    if url is None:
        return verify(data_dir)
    check_store_url(url)
    from fyp.storage.postgres.audit import PgAuditChain
    from fyp.storage.postgres.database import Database

    db = Database(url, pool_size=1).attach()
    try:
        chain = PgAuditChain(db)
        try:
            return chain.verify()
        finally:
            chain.close()
    finally:
        db.release()
