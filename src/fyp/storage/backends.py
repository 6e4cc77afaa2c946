"""The stores a deployment uses, chosen by URL (``Settings.store``): the catalog, the
moderation history, the users (profiles, controls, refreshes, erasure tombstones) and
the impression log. (The event log has its own URL: :mod:`fyp.events.backends`.)

- None (the default): the embedded SQLite files in the data directory.
- ``postgresql://user[:password]@host:port/database[?schema=NAME]``: every store in
  one schema of a PostgreSQL server (:mod:`fyp.storage.postgres`), shared by every
  process given the same URL; see docs/cluster.md.

Only this module and the store modules it opens know the backends."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from fyp.catalog.moderation import ModerationStore, SqliteModerationStore
from fyp.catalog.store import CatalogStore, SqliteCatalogStore
from fyp.events.impressions import ImpressionLog, SqliteImpressionLog
from fyp.storage.postgres.url import SCHEMES, split_url
from fyp.users.store import SqliteUserStore, UserStore


@dataclass(frozen=True)
class Stores:
    catalog: CatalogStore
    moderation: ModerationStore
    users: UserStore
    impressions: ImpressionLog


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


def open_stores(url: str | None, data_dir: Path) -> Stores:
    """The stores at ``url`` (None: the embedded ones in ``data_dir``)."""
    if url is None:
        return Stores(
            SqliteCatalogStore(data_dir / "catalog.db"),
            SqliteModerationStore(data_dir / "moderation.db"),
            SqliteUserStore(data_dir / "users.db"),
            SqliteImpressionLog(data_dir / "impressions.db"),
        )
    check_store_url(url)
    from fyp.storage.postgres.catalog import PgCatalogStore, PgModerationStore
    from fyp.storage.postgres.database import Database
    from fyp.storage.postgres.impressions import PgImpressionLog
    from fyp.storage.postgres.users import PgUserStore

    db = Database(url)
    with contextlib.ExitStack() as undo:  # a store that fails to open: the rest closed
        undo.callback(db.attach().release)  # (held while the stores open)
        catalog = PgCatalogStore(db)
        undo.callback(catalog.close)
        moderation = PgModerationStore(db)
        undo.callback(moderation.close)
        users = PgUserStore(db)
        undo.callback(users.close)
        impressions = PgImpressionLog(db)
        undo.pop_all()
    db.release()  # (the stores hold it now)
    return Stores(catalog, moderation, users, impressions)
