"""What every store on a Redis server shares: its faults told apart from bugs, and the
scrub that leaves nothing of deleted keys in the server's files (after an erasure)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis

from fyp.storage.errors import StorageUnavailableError

_POLL_S = 0.05
SCHEMES = ("redis", "rediss", "unix")
DEFAULT_PREFIX = "fyp"


def split_url(url: str, what: str) -> tuple[str, str]:
    """``redis://…?prefix=p`` → (the URL redis-py is given, without ``prefix``; the
    prefix, ``fyp`` unless given). ValueError, naming ``what`` (the store), for a URL
    that names no Redis server or a bad prefix."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ValueError(
            f"{what} URL's scheme {parts.scheme!r} is none of "
            f"{', '.join(SCHEMES)} (for example redis://127.0.0.1:6379/0)"
        )
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    prefix = query.pop("prefix", DEFAULT_PREFIX)
    if not prefix or any(c in prefix for c in "{}"):
        raise ValueError(f"{what}'s prefix {prefix!r} must be non-empty, without braces")
    rest = urlunsplit(parts._replace(query=urlencode(query)))
    if not parts.netloc:  # (unix:///path: urlunsplit writes unix:/path)
        rest = rest.replace(":", "://", 1)
    return rest, prefix


@contextlib.contextmanager
def reaching(what: str) -> Iterator[None]:
    """Redis's connection faults (down, restarting, loading its data, a timeout, a
    replica that became read-only) as :class:`StorageUnavailableError`, which the API
    answers with 503 and a Retry-After; ``what``: the store, for the message."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError) as err:
        raise StorageUnavailableError(f"{what}'s Redis server: {err}") from err
    except redis.ResponseError as err:
        if not str(err).startswith(("LOADING", "BUSY", "MASTERDOWN")):
            raise
        raise StorageUnavailableError(f"{what}'s Redis server: {err}") from err


def config(client: redis.Redis, name: str) -> str:
    return str(client.config_get(name).get(name, ""))


def scrub(client: redis.Redis, timeout_s: float = 600.0) -> None:
    """Rewrite the server's files from what it holds now, so that nothing of deleted
    keys is left in them: the AOF (BGREWRITEAOF: a new base file, the old base and
    incremental files deleted), when AOF is on; the RDB file (BGSAVE), when the server
    saves snapshots (``save`` set). Returns once both are written, or raises. What it
    cannot reach: replicas' files (each needs the same), backups copied off the server,
    and an RDB file left from before snapshots were turned off."""
    deadline = time.monotonic() + timeout_s
    if int(client.info("persistence")["aof_enabled"]):
        _background(
            client, "BGREWRITEAOF", "aof_rewrites", "aof_rewrite", "aof_last_bgrewrite_status",
            deadline,
        )  # fmt: skip
    if config(client, "save").strip():
        _background(client, "BGSAVE", "rdb_saves", "rdb_bgsave", "rdb_last_bgsave_status", deadline)


def _background(
    client: redis.Redis, command: str, counter: str, state: str, status: str, deadline: float
) -> None:
    """Run ``command`` (a forked rewrite) to its end: started after this call (one already
    running may have started before the deletions, so it is waited out and another
    started), and successful."""
    while True:
        before = int(client.info("persistence")[counter])
        try:
            if command == "BGSAVE":
                client.bgsave(schedule=True)
            else:
                client.bgrewriteaof()
            break
        except redis.ResponseError as err:
            if "in progress" not in str(err):
                raise
            _wait(client, lambda info: not _busy(info, state), deadline, command)
    info = _wait(
        client,
        lambda info: int(info[counter]) > before and not _busy(info, state),
        deadline,
        command,
    )
    if info[status] != "ok":
        raise StorageUnavailableError(
            f"the Redis server's {command} failed: {status}={info[status]}"
        )


def _busy(info: dict[str, Any], state: str) -> bool:
    in_progress = int(info.get(f"{state}_in_progress", 0))
    scheduled = int(info.get(f"{state}_scheduled", 0))
    return bool(in_progress or scheduled)


def _wait(
    client: redis.Redis, done: Callable[[dict[str, Any]], bool], deadline: float, command: str
) -> dict[str, Any]:
    while True:
        info: dict[str, Any] = client.info("persistence")
        if done(info):
            return info
        if time.monotonic() > deadline:
            raise StorageUnavailableError(f"the Redis server's {command} did not finish in time")
        time.sleep(_POLL_S)
