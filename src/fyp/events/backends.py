"""The event log a deployment uses, chosen by URL (``Settings.event_log``).

- None (the default): the embedded SQLite log, ``events.db`` in the data directory.
- ``sqlite:///path/to/events.db``: an embedded log elsewhere.
- ``redis://[user:password@]host:port/db``, ``rediss://…`` (TLS), ``unix:///path.sock``:
  :class:`fyp.events.redis_log.RedisEventLog`, shared by every process given the same
  URL. Options in the query: ``prefix`` (the key prefix, ``fyp``; deployments sharing a
  server need one each) and ``durability`` (``always``, the default; ``everysec``;
  ``none``: see docs/cluster.md).

Only this module and the store modules it opens know the backends."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from fyp.events.log import EventLog, SqliteEventLog

SCHEMES = ("sqlite", "redis", "rediss", "unix")
EMBEDDED_FILE = "events.db"


def check_event_log_url(url: str) -> str:
    """``url`` if it names a backend this engine has (its options parsed and checked),
    else a ValueError saying what is wrong; nothing is opened."""
    scheme = urlsplit(url).scheme
    if scheme not in SCHEMES:
        raise ValueError(
            f"the event log URL's scheme {scheme!r} is none of {', '.join(SCHEMES)} "
            "(for example redis://127.0.0.1:6379/0)"
        )
    if scheme == "sqlite":
        _sqlite_path(url)
    else:
        from fyp.events.redis_log import split_url

        split_url(url)
    return url


def _sqlite_path(url: str) -> Path:
    parts = urlsplit(url)
    if parts.netloc or not parts.path or parts.query:
        raise ValueError(f"a SQLite event log URL is sqlite:///absolute/path.db, not {url!r}")
    return Path(parts.path)


def event_log_identity(url: str | None) -> str | None:
    """``url`` without a password (None stays None): what a checkpoint records of the log
    it was made from, so that a checkpoint is not applied to another log (its offsets
    would skip that log's events) and no credential is written into it."""
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}@{host}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


def open_event_log(url: str | None, data_dir: Path) -> EventLog:
    """The event log at ``url`` (None: the embedded one in ``data_dir``)."""
    if url is None:
        return SqliteEventLog(data_dir / EMBEDDED_FILE)
    check_event_log_url(url)
    if urlsplit(url).scheme == "sqlite":
        return SqliteEventLog(_sqlite_path(url))
    from fyp.events.redis_log import RedisEventLog  # redis is imported only when asked for

    return RedisEventLog.from_url(url)
